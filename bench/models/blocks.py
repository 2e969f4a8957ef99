"""A model's transformer blocks: the layer list methods cut and freeze, and the modules it says must not be split."""

from __future__ import annotations

from typing import Any

from bench.errors import Unsupported


def transformer_layers(model: Any) -> tuple[str, Any]:
    """The ModuleList of transformer blocks and its dotted name."""
    import torch

    best = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "layer", "h", "blocks"):
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    if best is None:
        raise Unsupported("cannot find the transformer layer list (a ModuleList named layers, layer, h or blocks)")
    return best


def transformer_blocks(model: Any) -> list[Any]:
    """The modules the model says must not be split (`_no_split_modules`: its decoder/encoder layers)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(getattr(base, "_no_split_modules", None) or ())
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise Unsupported(f"{type(base).__name__} names no transformer blocks (_no_split_modules)")
    return blocks
