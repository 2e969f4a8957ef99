"""Knowledge distillation: a frozen teacher's softened outputs train a student.

The cell's model is the student's starting point; `student_layers: k` keeps k evenly spaced blocks of it (the
DistilBERT way: give the teacher's checkpoint as the model to take its layers). The teacher is any model source
(named config, config file, directory, hub id, or a full-model checkpoint directory an earlier run wrote), loaded
frozen on the cell's device, so its memory and forward time are part of the cell's. The student may itself use
another method (`student_method: lora`). `alpha: 0` trains the same student without the teacher (the control).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from bench.errors import Unsupported
from bench.methods.base import Method, MethodConfig, MethodContext
from bench.models.params import count_params
from bench.options import parse_options
from bench.results.metrics import MetricSpec


@dataclass
class DistillOptions(MethodConfig):
    content_fields: ClassVar[tuple[str, ...]] = ("teacher",)
    teacher: str = ""
    teacher_options: dict[str, Any] = field(default_factory=dict)  # model options of the teacher (e.g. weights)
    temperature: float = 2.0
    alpha: float = 0.5  # weight of the soft (teacher) loss; 1 - alpha on the task loss
    student_layers: int | None = None  # keep this many evenly spaced blocks of the cell's model
    student_method: str = "full"
    student_method_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.teacher and self.alpha > 0:
            raise ValueError("distill needs `teacher` (a model source) unless alpha is 0")
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise ValueError("alpha must be in [0, 1] and temperature > 0")
        if self.student_layers is not None and self.student_layers < 1:
            raise ValueError("student_layers must be >= 1")


def keep_layers(model: Any, k: int) -> list[int]:
    """Keep k evenly spaced transformer blocks (first and last included); returns the kept indices."""
    import torch

    from bench.models.blocks import transformer_layers

    name, layers = transformer_layers(model)
    n = len(layers)
    if k > n:
        raise Unsupported(f"student_layers={k} but the model has only {n} layers")
    keep = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)}) if k > 1 else [0]
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, torch.nn.ModuleList([layers[i] for i in keep]))
    for new_index, block in enumerate(getattr(parent, attr)):
        for m in block.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = new_index  # caches and rotary bookkeeping index blocks by position
    model.config.num_hidden_layers = len(keep)
    if isinstance(getattr(model.config, "layer_types", None), list):
        model.config.layer_types = [model.config.layer_types[i] for i in keep]
    return keep


class Distill(Method):
    """Knowledge distillation from a frozen teacher into a (smaller) student, optionally through another method."""

    name = "distill"
    config_cls = DistillOptions
    trains_base = True
    quantized_base_ok = False
    metric_specs = (
        MetricSpec("teacher_score", "the task's score of the frozen teacher on the same held-out split (scored when "
                   "it is loaded: its time is in the apply phase)", label="teacher score", group="distill"),
        MetricSpec("teacher_params", "parameters of the frozen teacher (0 without one)", label="teacher params",
                   fmt="int", group="distill"),
        MetricSpec("teacher_memory_mib", "bytes of the teacher's weights and buffers on the device", "MiB",
                   label="teacher MiB", group="distill"),
        MetricSpec("teacher_forward_s", "time of the teacher's forwards over all training steps (CUDA events on a "
                   "GPU, no sync inside the step)", "s", label="teacher forward s", group="distill"),
        MetricSpec("teacher_forward_share", "teacher_forward_s / the training steps' time",
                   label="teacher share of training", group="distill"),
        MetricSpec("student_layers", "blocks kept in the student (student_layers)", label="student layers",
                   fmt="int", group="distill"),
    )  # fmt: skip

    def __init__(self, config: DistillOptions, ctx: MethodContext):
        super().__init__(config, ctx)
        self.teacher: Any = None
        self.teacher_clock = SpanClock()
        self.teacher_score: float | None = None
        self.kept: list[int] | None = None
        cls = ctx.load_method(config.student_method)
        inner_cfg, problems = parse_options(cls.config_cls, config.student_method_options, "student_method")
        if problems:
            raise ValueError("; ".join(problems))
        self.inner = cls(inner_cfg, ctx)

    def apply(self, model: Any) -> Any:
        config = self.config
        self.kept = keep_layers(model, config.student_layers) if config.student_layers else None
        if config.alpha > 0:
            self.teacher = self.ctx.load_frozen_model(config.teacher, config.teacher_options)
            if self.ctx.evaluate is not None:  # the ceiling its students are measured against
                self.teacher_score = self.ctx.evaluate(self.teacher)
        return self.inner.apply(model)

    def load(self, base_model: Any, ckpt_dir: Path) -> Any:
        if self.config.student_layers:
            keep_layers(base_model, self.config.student_layers)
        return self.inner.load(base_model, ckpt_dir)

    def loss(self, model: Any, task: Any, step: Any) -> Any:
        hard, logits = task.loss_and_logits(model, step.batch, step.total_targets)
        if self.teacher is None:
            return hard
        import torch

        with torch.no_grad(), self.teacher_clock.span(logits.is_cuda):
            teacher = self.teacher(
                input_ids=step.batch["input_ids"], attention_mask=step.batch.get("attention_mask")
            ).logits
        soft = soft_loss(logits, teacher, step.batch, self.config.temperature, task.model_kind) / max(
            step.total_targets, 1
        )
        return (1 - self.config.alpha) * hard + self.config.alpha * soft

    def after_optimizer_step(self, model: Any, step: int) -> None:
        self.inner.after_optimizer_step(model, step)

    def save(self, model: Any, out_dir: Path) -> dict[str, Any] | None:
        return self.inner.save(model, out_dir)

    def metrics(self, train_time_s: float) -> dict[str, Any]:
        teacher = self.teacher
        tensors = [*teacher.parameters(), *teacher.buffers()] if teacher is not None else []
        teacher_s = self.teacher_clock.total_s()
        return {
            "teacher_params": count_params(teacher)[1] if teacher is not None else 0,
            "teacher_memory_mib": sum(t.numel() * t.element_size() for t in tensors) / 2**20,
            "teacher_forward_s": teacher_s,
            "teacher_forward_share": teacher_s / train_time_s if train_time_s else None,
            "student_layers": len(self.kept) if self.kept else None,
            "teacher_score": self.teacher_score,
        }


class SpanClock:
    """Time inside a region of each step: on a GPU, CUDA events recorded on the stream around it and read once at
    the end (no host synchronisation inside the step: the student's queued work is neither waited for nor counted,
    and the step keeps its overlap); on a CPU, perf_counter."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, Any]] = []
        self.seconds = 0.0

    @contextmanager
    def span(self, cuda: bool) -> Any:
        if not cuda:
            t0 = time.perf_counter()
            yield
            self.seconds += time.perf_counter() - t0
            return
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        self.events.append((start, end))

    def total_s(self) -> float:
        if self.events:
            self.events[-1][1].synchronize()
            self.seconds += sum(start.elapsed_time(end) for start, end in self.events) / 1000  # ms
            self.events.clear()
        return self.seconds


def soft_loss(student: Any, teacher: Any, batch: dict[str, Any], temperature: float, kind: str) -> Any:
    """Summed KL(teacher || student) of temperature-softened distributions, x T^2 (Hinton et al.): per example
    for classification, per labelled target token for causal LM."""
    import torch.nn.functional as F

    t = temperature
    if kind == "causal_lm":
        mask = batch["labels"][:, 1:] != -100
        student, teacher = student[:, :-1][mask], teacher[:, :-1][mask]
    log_p = F.log_softmax(student.float() / t, dim=-1)
    log_q = F.log_softmax(teacher.float() / t, dim=-1)
    return F.kl_div(log_p, log_q, log_target=True, reduction="sum") * t * t
