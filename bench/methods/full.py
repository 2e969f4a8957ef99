"""Full fine-tuning: the baseline every other method is compared against."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.methods.base import Method, MethodContext


class FullFineTune(Method):
    """Full fine-tuning: every parameter trains (the baseline)."""

    name = "full"
    quantized_base_ok = False

    def apply(self, model: Any, config: Any, ctx: MethodContext) -> Any:
        for p in model.parameters():
            p.requires_grad = True
        return model

    def save(self, model: Any, out_dir: Path) -> None:
        model.save_pretrained(out_dir)

    def load(self, base_model: Any, config: Any, ctx: MethodContext, ckpt_dir: Path) -> Any:
        return type(base_model).from_pretrained(ckpt_dir)
