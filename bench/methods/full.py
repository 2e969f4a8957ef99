"""Full fine-tuning: the baseline every other method is compared against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.methods.base import Method, MethodContext

SHIP_DTYPE = {"bf16": "bfloat16", "fp16": "float16"}  # what a user ships after mixed-precision training


class FullFineTune(Method):
    """Full fine-tuning: every parameter trains (the baseline)."""

    name = "full"
    quantized_base_ok = False
    trains_base = True

    def apply(self, model: Any) -> Any:
        for p in model.parameters():
            p.requires_grad = True
        return model

    def save(self, model: Any, out_dir: Path) -> dict[str, Any]:
        """The whole model in the dtype a user would ship (bf16 after a bf16 run; the fp32 master weights are a
        training detail), through save_pretrained."""
        return save_full_model(model, out_dir, self.ctx)

    def load(self, base_model: Any, ckpt_dir: Path) -> Any:
        return type(base_model).from_pretrained(ckpt_dir, dtype=base_model.dtype)


def save_full_model(model: Any, out_dir: Path, ctx: MethodContext) -> dict[str, Any]:
    """save_pretrained of the whole model in the dtype a user ships after this precision, with the tokenizer (so the
    checkpoint is a complete model source)."""
    import torch

    dtype = getattr(torch, SHIP_DTYPE.get(ctx.precision, "float32"))
    state = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    model.save_pretrained(out_dir, state_dict=state)
    tokenizer = ctx.tokenizer
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    saved = "full model" + (" and tokenizer" if tokenizer is not None else "")
    return {"saved": saved, "dtype": str(dtype).replace("torch.", "")}
