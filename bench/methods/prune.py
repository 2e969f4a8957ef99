"""Pruning, then fine-tuning what is left.

`structure: magnitude` zeroes the smallest-magnitude weights of each linear layer inside the transformer blocks
(unstructured; a gradient mask keeps them exactly zero while the rest trains). `channels` removes the least
important MLP channels and `heads` the least important attention heads (whole key/value groups for grouped-query
attention), shrinking the layers for real. `then: full` fine-tunes every remaining weight; `then: lora` trains a
LoRA on the pruned, frozen base. Scores before pruning, after pruning and after fine-tuning are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bench.methods.base import Method, MethodConfig, MethodContext
from bench.methods.full import save_full_model
from bench.methods.structure import block_linears, prune_heads, prune_mlp_channels
from bench.results.metrics import MetricSpec


@dataclass
class PruneOptions(MethodConfig):
    sparsity: float = 0.5
    structure: Literal["magnitude", "channels", "heads"] = "magnitude"
    then: Literal["full", "lora"] = "full"
    lora_r: int = 8
    lora_alpha: int = 16

    def __post_init__(self):
        if not 0 < self.sparsity < 1:
            raise ValueError(f"sparsity must be in (0, 1), got {self.sparsity}")


def magnitude_masks(model: Any, sparsity: float) -> dict[str, Any]:
    """Zero the smallest |w| of each block linear layer; return name -> keep-mask."""
    import torch

    masks = {}
    with torch.no_grad():
        for name, module in block_linears(model):
            w = module.weight
            k = int(w.numel() * sparsity)
            if k == 0:
                continue
            threshold = w.abs().flatten().kthvalue(k).values
            mask = w.abs() > threshold
            w.mul_(mask)
            masks[name] = mask
    return masks


def sparse_bytes(tensor: Any) -> int:
    """Bytes of a weight stored sparse as non-zero values plus a one-bit-per-element presence mask (the bitmask
    format of sparse checkpoints) when that is smaller, else dense."""
    dense = tensor.numel() * tensor.element_size()
    nnz = int((tensor != 0).sum())
    return min(dense, nnz * tensor.element_size() + (tensor.numel() + 7) // 8)


class Prune(Method):
    """Prune (magnitude, MLP channels or attention heads) to a sparsity, then fine-tune the rest (full or LoRA)."""

    name = "prune"
    config_cls = PruneOptions
    trains_base = True
    quantized_base_ok = False
    metric_specs = (
        MetricSpec("prune_sparsity", "achieved share of zero (or removed) weights in the pruned layers",
                   label="sparsity", group="prune"),
        MetricSpec("nonzero_params", "parameters that are not zero after pruning and fine-tuning",
                   label="non-zero params", fmt="int", group="prune"),
        MetricSpec("model_dense_bytes", "bytes of the pruned model's weights stored dense", "B",
                   label="dense bytes", fmt="bytes", group="prune"),
        MetricSpec("model_sparse_bytes", "bytes of the same stored sparse (non-zero values + a 1-bit mask, where "
                   "smaller)", "B", label="sparse bytes", fmt="bytes", group="prune"),
        MetricSpec("score_unpruned", "the task's score before pruning", label="score unpruned", group="prune"),
        MetricSpec("score_pruned", "the task's score right after pruning, before fine-tuning",
                   label="score pruned", group="prune"),
    )  # fmt: skip

    def __init__(self, config: PruneOptions, ctx: MethodContext):
        super().__init__(config, ctx)
        self.masks: dict[str, Any] = {}
        self.achieved: float | None = None
        self.score_unpruned: float | None = None
        self.score_pruned: float | None = None
        self.model: Any = None
        self.inner: Method | None = None
        if config.then == "lora":
            from bench.methods.peft_methods import LoraOptions

            self.inner = ctx.method("lora", LoraOptions(r=config.lora_r, alpha=config.lora_alpha))

    def apply(self, model: Any) -> Any:
        self.score_unpruned = self.ctx.evaluate(model)
        self._prune(model)
        self.score_pruned = self.ctx.evaluate(model)
        self.model = model
        if self.inner is not None:
            return self.inner.apply(model)
        for name, p in model.named_parameters():
            p.requires_grad = True
            mask = self.masks.get(name.rsplit(".", 1)[0]) if name.endswith(".weight") else None
            if mask is not None:
                p.register_hook(lambda g, m=mask: g * m)  # pruned weights get no gradient: AdamW leaves them 0
        return model

    def load(self, base_model: Any, ckpt_dir: Any) -> Any:
        if self.inner is None:  # the checkpoint is the whole pruned model
            return type(base_model).from_pretrained(ckpt_dir, dtype=base_model.dtype)
        self._prune(base_model)  # deterministic: the same base prunes the same way
        return self.inner.load(base_model, ckpt_dir)

    def _prune(self, model: Any) -> None:
        config = self.config
        self.masks = {}
        if config.structure == "magnitude":
            before = sum(m.weight.numel() for _, m in block_linears(model))
            self.masks = magnitude_masks(model, config.sparsity)
            after = sum(int((m.weight != 0).sum()) for _, m in block_linears(model))
        elif config.structure == "channels":
            before, after = prune_mlp_channels(model, config.sparsity)
        else:
            before, after = prune_heads(model, config.sparsity)
        self.achieved = 1 - after / before  # over the pruned layers: all block linears, the MLPs, the attention

    def save(self, model: Any, out_dir: Any) -> dict[str, Any] | None:
        if self.inner is not None:
            return self.inner.save(model, out_dir)
        return save_full_model(model, out_dir, self.ctx)

    def metrics(self, train_time_s: float) -> dict[str, Any]:
        params = list(self.model.parameters())
        return {
            "prune_sparsity": self.achieved,
            "nonzero_params": sum(int((p != 0).sum()) for p in params),
            "model_dense_bytes": sum(p.numel() * p.element_size() for p in params),
            "model_sparse_bytes": sum(sparse_bytes(p.detach()) for p in params),
            "score_unpruned": self.score_unpruned,
            "score_pruned": self.score_pruned,
        }
