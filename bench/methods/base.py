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
    device: str = "cpu"
    grad_ckpt: bool = False  # gradient checkpointing is on for this cell (the harness enables it after apply)
    num_labels: int | None = None
    evaluate: Any = None  # evaluate(model) -> the task's headline score now (e.g. before and after pruning)
    load_frozen_model: Any = None  # load_frozen_model(source, options) -> a frozen model on the cell's device
    load_method: Any = None  # load_method(name) -> (method class, config parser): to compose methods


class Method:
    name: ClassVar[str] = ""
    config_cls: ClassVar[type] = MethodConfig
    model_kinds: ClassVar[tuple[str, ...]] = ("causal_lm", "seq_cls")
    quantized_base_ok: ClassVar[bool] = True
    required_precisions: ClassVar[tuple[str, ...]] = ()  # e.g. qlora -> ("nf4",)
    trains_base: ClassVar[bool] = False  # trains base weights themselves (stored fp32 as master weights)
    prepends_tokens: ClassVar[bool] = False  # puts virtual tokens before the input (their labels too)
    requires: ClassVar[tuple[str, ...]] = ()  # libraries the cell imports in its import phase (timed there)

    def apply(self, model: Any, config: Any, ctx: MethodContext) -> Any:
        raise NotImplementedError

    def loss(self, model: Any, task: Any, step: Any) -> Any:
        """The loss of one micro-batch (`step.batch` on the device, `step.total_targets` of the effective batch),
        already divided so that micro-batch losses sum to the effective batch's. Override to add terms (a
        regulariser, a distillation loss); keep the division so accumulation stays exact."""
        return task.loss(model, step.batch, step.total_targets)

    def metrics(self, train_time_s: float) -> dict[str, Any]:
        """Extra figures for the record's metrics (e.g. a teacher's parameters and its share of the training
        time `train_time_s`); called after training. Names need an entry in bench/metric_docs.py."""
        return {}

    def after_optimizer_step(self, model: Any, step: int) -> None:
        """Called after optimizer.step(), before the gradients are cleared (AdaLoRA's rank allocation)."""

    def save(self, model: Any, out_dir: Path) -> dict[str, Any] | None:
        """Write what the method trained to `out_dir`; may return `{saved: what, dtype: ...}` for the record.
        Default: only the trainable tensors, as safetensors."""
        save_trainable(model, out_dir)
        return {"saved": "trainable tensors"}

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
