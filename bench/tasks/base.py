"""The task plugin contract: what the training loop and the evaluations need of a task.

A task is constructed with its parsed options and the cell's context (`Task(config, TaskContext(...))`), then
`load()` makes its data. The training loop asks for effective batches (`train_batches`), splits them into
micro-batches (`micro_batches`), counts their loss targets (`target_count`) and takes the loss
(`loss_and_logits`); `evaluate` scores a model. `bench.tasks.batching.ExampleTask` implements everything but
`load` and `evaluate` for tasks whose data are lists of token-id examples (every built-in task).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from bench.results.metrics import MetricSpec

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    Model = torch.nn.Module
    Tensor = torch.Tensor

IGNORE = -100  # label of a position that carries no loss
Example = dict[str, Any]  # input_ids (+ labels / label, and what the task's evaluation needs)
Batch = dict[str, Any]  # tensors: input_ids, labels, attention_mask where there is padding
Autocast = Callable[[], AbstractContextManager[Any]]


@dataclass
class TaskConfig:
    """Base for task options; subclasses add typed fields settable from the suite."""

    # fields naming local input files or directories (a teacher checkpoint, a data file): their content, not their
    # path string, goes into the cell's spec hash (bench/suite/fingerprint.py)
    content_fields: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True, kw_only=True)
class TaskContext:
    """What a task knows of the cell: its sequence length, seed, the model's tokenizer (None for models without
    one) and configuration, and the padding id."""

    seq_len: int
    seed: int
    tokenizer: PreTrainedTokenizerBase | None = None
    model_config: PretrainedConfig | None = None
    pad_id: int = 0


@dataclass
class Step:
    """What one micro-batch forward needs: the batch on the device, its own target count and the effective
    batch's (a term that does not depend on the data, like a regulariser, is weighted targets / total_targets
    per micro-batch so it counts once per optimizer step whatever the split)."""

    batch: Batch
    total_targets: int
    targets: int


class Task(abc.ABC):
    name: ClassVar[str] = ""
    model_kind: ClassVar[str] = "causal_lm"  # or "seq_cls"
    config_cls: ClassVar[type[TaskConfig]] = TaskConfig
    num_labels: ClassVar[int | None] = None
    metric: ClassVar[str] = "accuracy"  # the headline score's name
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[str] = "[0,1]"
    synthetic: ClassVar[bool] = False
    needs_tokenizer: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()  # libraries the cell imports in its import phase (timed there)
    metric_specs: ClassVar[tuple[MetricSpec, ...]] = ()  # figures `evaluate` returns beyond `score`, documented

    def __init__(self, config: TaskConfig, ctx: TaskContext):
        self.config = config
        self.ctx = ctx

    @property
    def seq_len(self) -> int:
        return self.ctx.seq_len

    @property
    def seed(self) -> int:
        return self.ctx.seed

    @classmethod
    def labels_for(cls, config: TaskConfig) -> int | None:
        """Classes of a seq_cls task with these options (the model's head size); default `num_labels`. A task over
        the user's data reads them from the data."""
        return cls.num_labels

    def info(self) -> dict[str, Any]:
        """What the record should say about the data as loaded (label mapping, example counts); default none."""
        return {}

    @abc.abstractmethod
    def load(self) -> None:
        """Make the task's training and evaluation data."""

    @abc.abstractmethod
    def evaluate(self, model: Model, device: str, batch_size: int, autocast: Autocast) -> dict[str, float]:
        """Metrics of `model` on the held-out data; must contain `score` (the headline metric)."""

    @abc.abstractmethod
    def train_batches(self, batch_size: int) -> Iterator[list[Example]]:
        """Endless effective batches in a seeded order that does not depend on micro-batching."""

    @abc.abstractmethod
    def micro_batches(self, examples: list[Example], micro: int) -> list[Batch]:
        """An effective batch as collated micro-batches of `micro` examples."""

    @abc.abstractmethod
    def target_count(self, batch: Batch, prepends_tokens: bool = False) -> int:
        """Loss terms a batch contributes (the divisor that keeps gradient accumulation exact)."""

    @abc.abstractmethod
    def loss_and_logits(self, model: Model, batch: Batch, total_targets: int) -> tuple[Tensor, Tensor]:
        """(this micro-batch's summed loss / the effective batch's target count, the model's logits)."""

    def loss(self, model: Model, batch: Batch, total_targets: int) -> Tensor:
        return self.loss_and_logits(model, batch, total_targets)[0]

    def loss_from_logits(self, logits: Tensor, batch: Batch, total_targets: int) -> Tensor:
        """The loss of `loss_and_logits` from logits a method computed itself (a forward without labels)."""
        raise NotImplementedError(f"task {self.name!r} cannot take its loss from logits")
