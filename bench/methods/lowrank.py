"""Low-rank factorization of the weights themselves: each targeted linear layer W (d_out x d_in) is replaced by
its truncated SVD, up (d_out x r) @ down (r x d_in) with sqrt(S) split between them, and only the factors train
(plus a classification head). Unlike LoRA, nothing is added: the model gets smaller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.errors import Unsupported
from bench.methods.base import Method, MethodConfig, unfreeze_head
from bench.methods.structure import block_linears
from bench.results.metrics import MetricSpec


@dataclass
class LowRankOptions(MethodConfig):
    r: int | None = None  # rank kept per layer (8 when neither r nor energy is given)
    energy: float | None = None  # instead of r: the smallest rank keeping this share of sum(S^2) per layer

    def __post_init__(self):
        if self.r is not None and self.energy is not None:
            raise ValueError("give one of r and energy, not both")
        if self.r is None and self.energy is None:
            self.r = 8
        if self.r is not None and self.r < 1:
            raise ValueError(f"r must be >= 1, got {self.r}")
        if self.energy is not None and not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")


def factorize(linear: Any, r: int | None, energy: float | None) -> Any:
    """The Sequential(down, up) equal to `linear` up to its rank-r truncation."""
    import torch

    if linear.weight.is_meta and energy is not None:
        raise Unsupported(
            "the rank `energy` keeps depends on the weights' singular values: no estimate before the run (the "
            "record has one); give `r` for one"
        )
    w = linear.weight.detach().float()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    if energy is not None:
        share = (s**2).cumsum(0) / (s**2).sum()
        r = int((share < energy).sum()) + 1
    r = min(r, s.numel())
    root = s[:r].sqrt()
    dtype, device = linear.weight.dtype, linear.weight.device
    down = torch.nn.Linear(w.shape[1], r, bias=False, device=device, dtype=dtype)
    up = torch.nn.Linear(r, w.shape[0], bias=linear.bias is not None, device=device, dtype=dtype)
    with torch.no_grad():
        down.weight.copy_(root[:, None] * vh[:r])
        up.weight.copy_(u[:, :r] * root[None, :])
        if linear.bias is not None:
            up.bias.copy_(linear.bias.detach())
            up.bias.requires_grad = False  # only the factors train
    return torch.nn.Sequential(down, up)


class LowRank(Method):
    """Truncated-SVD factorization of the block linear layers; the factors are fine-tuned."""

    name = "lowrank"
    config_cls = LowRankOptions
    trains_base = True
    quantized_base_ok = False
    metric_specs = (
        MetricSpec("lowrank_compression", "factor parameters / original parameters of the factorized layers",
                   label="compression", group="lowrank"),
        MetricSpec("lowrank_rank_mean", "mean rank kept per factorized layer", label="mean rank", group="lowrank"),
        MetricSpec("score_factorized", "the task's score right after factorization, before fine-tuning",
                   label="score factorized", group="lowrank"),
    )  # fmt: skip

    def apply(self, model: Any) -> Any:
        config, ctx = self.config, self.ctx
        targets = block_linears(model)
        before = sum(m.weight.numel() for _, m in targets)
        for p in model.parameters():
            p.requires_grad = False
        ranks, after = [], 0
        for name, linear in targets:
            factors = factorize(linear, config.r, config.energy)
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, factors)
            ranks.append(factors[0].out_features)
            after += factors[0].weight.numel() + factors[1].weight.numel()
        if ctx.model_kind == "seq_cls":
            unfreeze_head(model)
        self.ranks, self.compression = ranks, after / before
        self.score_factorized = ctx.evaluate(model)
        return model

    def metrics(self, train_time_s: float) -> dict[str, Any]:
        return {
            "lowrank_compression": self.compression,
            "lowrank_rank_mean": sum(self.ranks) / len(self.ranks),
            "score_factorized": self.score_factorized,
        }
