"""The method plugin contract: a name, a config dataclass, and `apply` that leaves exactly the intended
parameters trainable. Modules here import torch/peft lazily so a suite validates without them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar


@dataclass
class MethodConfig:
    """Base for method options; subclasses add typed fields settable from the suite."""


@dataclass(frozen=True)
class MethodContext:
    """What a method may need to know about the cell it is applied in."""

    model_kind: str  # "causal_lm" | "seq_cls"
    precision: str
    steps: int
    seed: int
    quantized: bool = False
    tokenizer: Any = None


class Method:
    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = MethodConfig
    model_kinds: ClassVar[tuple[str, ...]] = ("causal_lm", "seq_cls")
    quantized_base_ok: ClassVar[bool] = True
    required_precisions: ClassVar[tuple[str, ...]] = ()  # e.g. qlora -> ("nf4",)

    def apply(self, model: Any, config: Any, ctx: MethodContext) -> Any:
        raise NotImplementedError

    def after_optimizer_step(self, model: Any, step: int) -> None:
        """Called after optimizer.step(), before the gradients are cleared (AdaLoRA's rank allocation)."""

    def save(self, model: Any, out_dir: Path) -> None:
        """Default: only the trainable tensors, as safetensors."""
        save_trainable(model, out_dir)

    def load(self, base_model: Any, config: Any, ctx: MethodContext, ckpt_dir: Path) -> Any:
        """Rebuild the trained model from a fresh base and the saved checkpoint."""
        model = self.apply(base_model, config, ctx)
        load_trainable(model, ckpt_dir)
        return model


def save_trainable(model: Any, out_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(out_dir / "trainable.safetensors"))


def load_trainable(model: Any, ckpt_dir: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(ckpt_dir / "trainable.safetensors"))
    missing = model.load_state_dict(state, strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"checkpoint holds tensors the model lacks: {missing.unexpected_keys[:5]}")


def classifier_head_names(model: Any) -> list[str]:
    """Module names of a sequence-classification head (trained by every method, as peft's SEQ_CLS does)."""
    heads = ("classifier", "score", "pre_classifier")
    return [n for n, _ in model.named_modules() if n.split(".")[-1] in heads]


def unfreeze_head(model: Any) -> None:
    for head in classifier_head_names(model):
        for p in model.get_submodule(head).parameters():
            p.requires_grad = True
