"""Houlsby bottleneck adapters: down-projection, nonlinearity, up-projection and a residual, inserted after
each block's attention output projection and MLP output projection (before the block's residual add)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bench.errors import Unsupported
from bench.methods.base import Method, MethodConfig, unfreeze_head

# Output projections of attention and MLP blocks across common architectures.
DEFAULT_TARGETS = (
    "attention.output.dense",
    "output.dense",
    "o_proj",
    "down_proj",
    "out_proj",
    "fc2",
    "attn.c_proj",
    "mlp.c_proj",
    "dense_4h_to_h",
)


@dataclass
class AdapterOptions(MethodConfig):
    reduction_factor: int = 16
    nonlinearity: Literal["relu", "gelu", "swish"] = "relu"
    target_modules: list[str] | None = None

    def __post_init__(self):
        if self.reduction_factor < 1:
            raise ValueError(f"reduction_factor must be >= 1, got {self.reduction_factor}")


def adapter_targets(model: Any, suffixes: tuple[str, ...] | list[str]) -> list[str]:
    import torch

    out = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) or hasattr(module, "out_features"):
            if any(name == s or name.endswith("." + s) for s in suffixes):
                out.append(name)
    return out


def bottleneck_width(d: int, reduction_factor: int) -> int:
    return max(1, d // reduction_factor)


class BottleneckAdapter(Method):
    """Houlsby bottleneck adapters after attention and MLP output projections."""

    name = "adapter"
    config_cls = AdapterOptions

    def apply(self, model: Any) -> Any:
        import torch

        config = self.config

        acts = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU, "swish": torch.nn.SiLU}

        class Adapter(torch.nn.Module):
            def __init__(self, d: int):
                super().__init__()
                b = bottleneck_width(d, config.reduction_factor)
                self.down = torch.nn.Linear(d, b)
                self.act = acts[config.nonlinearity]()
                self.up = torch.nn.Linear(b, d)
                torch.nn.init.normal_(self.down.weight, std=1e-2)
                torch.nn.init.zeros_(self.down.bias)
                torch.nn.init.zeros_(self.up.weight)  # starts as the identity: the base model is unchanged
                torch.nn.init.zeros_(self.up.bias)

            def forward(self, h):
                return h + self.up(self.act(self.down(h.to(self.down.weight.dtype)))).to(h.dtype)

        class WithAdapter(torch.nn.Module):
            def __init__(self, base: torch.nn.Module):
                super().__init__()
                self.base = base
                self.adapter = Adapter(base.out_features)

            def forward(self, x):
                return self.adapter(self.base(x))

        targets = adapter_targets(model, config.target_modules or DEFAULT_TARGETS)
        if not targets:
            raise Unsupported(f"no attention/MLP output projections found for adapters (looked for {DEFAULT_TARGETS})")
        for p in model.parameters():
            p.requires_grad = False
        for name in targets:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            base = getattr(parent, child)
            wrapped = WithAdapter(base)
            device = next(base.parameters()).device
            wrapped.adapter.to(device)
            setattr(parent, child, wrapped)
        if self.ctx.model_kind == "seq_cls":
            unfreeze_head(model)
        return model
