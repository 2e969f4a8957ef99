"""Selective fine-tuning without new parameters: BitFit (bias terms only) and layer/pattern freezing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.errors import Unsupported
from bench.methods.base import Method, MethodConfig, unfreeze_head
from bench.models.blocks import transformer_layers


class BitFit(Method):
    """Only bias terms train (plus the classification head for sequence classification)."""

    name = "bitfit"
    trains_base = True  # biases live in the base's own modules, which keep fp32 (see precision.cast_frozen)

    def apply(self, model: Any) -> Any:
        biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
        if not biases:
            raise Unsupported(f"{type(model).__name__} has no bias terms: BitFit has nothing to train")
        for p in model.parameters():
            p.requires_grad = False
        for p in biases:
            p.requires_grad = True
        if self.ctx.model_kind == "seq_cls":
            unfreeze_head(model)
        return model


@dataclass
class FreezeOptions(MethodConfig):
    mode: Literal["last_k", "layernorm", "patterns"] = "last_k"
    k: int = 1
    patterns: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.mode == "patterns" and not self.patterns:
            raise ValueError("mode 'patterns' needs a non-empty `patterns` list of parameter-name regexes")
        if self.mode == "last_k" and self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")


class Freeze(Method):
    """Train the last k blocks, only the layer norms, or parameters matching regexes; all else frozen."""

    name = "freeze"
    config_cls = FreezeOptions
    quantized_base_ok = False
    trains_base = True

    def apply(self, model: Any) -> Any:
        config = self.config
        for p in model.parameters():
            p.requires_grad = False
        if config.mode == "last_k":
            layers_name, layers = transformer_layers(model)
            if config.k > len(layers):
                raise Unsupported(f"k={config.k} but the model has only {len(layers)} layers")
            for block in list(layers)[-config.k :]:
                for p in block.parameters():
                    p.requires_grad = True
        else:
            regexes = (
                [re.compile(p) for p in config.patterns]
                if config.mode == "patterns"
                else [re.compile(r"(layernorm|layer_norm|LayerNorm|_norm|\.norm)\.")]
            )
            for name, p in model.named_parameters():
                if any(r.search(name) for r in regexes):
                    p.requires_grad = True
        if self.ctx.model_kind == "seq_cls":
            unfreeze_head(model)
        if not any(p.requires_grad for p in model.parameters()):
            raise Unsupported(f"freeze mode {config.mode!r} selected no parameters on {type(model).__name__}")
        return model
