"""The method plugin contract. A method is constructed with its parsed options and the cell's context
(`Method(config, ctx)`), then `apply(model)` leaves exactly the intended parameters trainable. Hooks with defaults:
the micro-batch loss, extra metrics (documented by `metric_specs`), a step hook, save and load.

Modules here import torch/peft lazily so a suite validates without them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from bench.results.metrics import MetricSpec

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from bench.tasks.base import Step, Task

    Model = torch.nn.Module
    Loss = torch.Tensor


@dataclass
class MethodConfig:
    """Base for method options; subclasses add typed fields settable from the suite."""

    # fields naming local input files or directories (a teacher checkpoint, a data file): their content, not their
    # path string, goes into the cell's spec hash (bench/suite/fingerprint.py)
    content_fields: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, kw_only=True)
class MethodContext:
    """What a method may know about, and use from, the cell it is applied in."""

    model_kind: str  # "causal_lm" | "seq_cls"
    precision: str
    steps: int
    seed: int
    quantized: bool = False
    tokenizer: PreTrainedTokenizerBase | None = None
    device: str = "cpu"
    grad_ckpt: bool = False  # gradient checkpointing is on for this cell (the harness enables it after apply)
    num_labels: int | None = None
    evaluate: Callable[[Model], float] | None = None  # the task's headline score of a model now
    load_frozen_model: Callable[[str, dict[str, Any]], Model] | None = None  # a frozen model on the cell's device
    load_method: Callable[[str], type[Method]] | None = None  # another method class (composition)

    def method(self, name: str, config: MethodConfig) -> Method:
        """Another method, constructed for this cell (e.g. LoRA after pruning)."""
        if self.load_method is None:
            raise RuntimeError("this context cannot load other methods")
        return self.load_method(name)(config, self)


class Method(abc.ABC):
    name: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    model_kinds: ClassVar[tuple[str, ...]] = ("causal_lm", "seq_cls")
    quantized_base_ok: ClassVar[bool] = True
    required_precisions: ClassVar[tuple[str, ...]] = ()  # e.g. qlora -> ("nf4",)
    trains_base: ClassVar[bool] = False  # trains base weights themselves (stored fp32 as master weights)
    prepends_tokens: ClassVar[bool] = False  # puts virtual tokens before the input (their labels too)
    requires: ClassVar[tuple[str, ...]] = ()  # libraries the cell imports in its import phase (timed there)
    metric_specs: ClassVar[tuple[MetricSpec, ...]] = ()  # the figures `metrics` returns, documented

    def __init__(self, config: MethodConfig, ctx: MethodContext):
        self.config = config
        self.ctx = ctx

    @abc.abstractmethod
    def apply(self, model: Model) -> Model:
        """The model with the method applied: exactly the intended parameters trainable."""

    def loss(self, model: Model, task: Task, step: Step) -> Loss:
        """The loss of one micro-batch (`step.batch` on the device, `step.total_targets` of the effective batch),
        already divided so that micro-batch losses sum to the effective batch's. Override to add terms (a
        regulariser, a distillation loss); keep the division so accumulation stays exact."""
        return task.loss(model, step.batch, step.total_targets)

    def metrics(self, train_time_s: float) -> dict[str, float | int | None]:
        """Extra figures for the record's metrics (e.g. a teacher's parameters and its share of the training
        time `train_time_s`); called after training. Each needs a row in `metric_specs`."""
        return {}

    def after_optimizer_step(self, model: Model, step: int) -> None:  # noqa: B027 - an optional hook
        """Called after optimizer.step(), before the gradients are cleared (AdaLoRA's rank allocation)."""

    def save(self, model: Model, out_dir: Path) -> dict[str, str] | None:
        """Write what the method trained to `out_dir`; may return `{saved: what, dtype: ...}` for the record.
        Default: only the trainable tensors, as safetensors."""
        save_trainable(model, out_dir)
        return {"saved": "trainable tensors"}

    def load(self, base_model: Model, ckpt_dir: Path) -> Model:
        """Rebuild the trained model from a fresh base and the saved checkpoint."""
        model = self.apply(base_model)
        load_trainable(model, ckpt_dir)
        return model


def save_trainable(model: Model, out_dir: Path) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(tensors, str(out_dir / "trainable.safetensors"))


def load_trainable(model: Model, ckpt_dir: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(ckpt_dir / "trainable.safetensors"))
    missing = model.load_state_dict(state, strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"checkpoint holds tensors the model lacks: {missing.unexpected_keys[:5]}")


def classifier_head_names(model: Model) -> list[str]:
    """Module names of a sequence-classification head (trained by every method, as peft's SEQ_CLS does)."""
    heads = ("classifier", "score", "pre_classifier")
    return [n for n, _ in model.named_modules() if n.split(".")[-1] in heads]


def unfreeze_head(model: Model) -> None:
    for head in classifier_head_names(model):
        for p in model.get_submodule(head).parameters():
            p.requires_grad = True
