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
from bench.methods.structure import block_linears, prune_heads, prune_mlp_channels


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

    def apply(self, model: Any, config: PruneOptions, ctx: MethodContext) -> Any:
        self.config, self.masks, self.precision = config, {}, ctx.precision
        self.score_unpruned = ctx.evaluate(model)
        self._prune(model, config)
        self.score_pruned = ctx.evaluate(model)
        self.model = model
        if config.then == "lora":
            return self._lora(model, config, ctx)
        for name, p in model.named_parameters():
            p.requires_grad = True
            mask = self.masks.get(name.rsplit(".", 1)[0]) if name.endswith(".weight") else None
            if mask is not None:
                p.register_hook(lambda g, m=mask: g * m)  # pruned weights get no gradient: AdamW leaves them 0
        return model

    def load(self, base_model: Any, config: PruneOptions, ctx: MethodContext, ckpt_dir: Any) -> Any:
        from bench.methods.full import FullFineTune

        if config.then == "full":  # the checkpoint is the whole pruned model
            return FullFineTune().load(base_model, config, ctx, ckpt_dir)
        self._prune(base_model, config)  # deterministic: the same base prunes the same way
        return ctx.load_method("lora")().load(base_model, None, ctx, ckpt_dir)

    def _prune(self, model: Any, config: PruneOptions) -> None:
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

    def _lora(self, model: Any, config: PruneOptions, ctx: MethodContext) -> Any:
        from bench.methods.peft_methods import LoraOptions

        self.inner = ctx.load_method("lora")()
        return self.inner.apply(model, LoraOptions(r=config.lora_r, alpha=config.lora_alpha), ctx)

    def save(self, model: Any, out_dir: Any) -> dict[str, Any] | None:
        if self.config.then == "lora":
            return self.inner.save(model, out_dir)
        from bench.methods.full import SHIP_DTYPE, FullFineTune

        saver = FullFineTune()
        saver.ship_dtype = SHIP_DTYPE.get(self.precision, "float32")
        return saver.save(model, out_dir)

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
