"""Tasks over the user's own files, read with `datasets` (csv, json/jsonl, parquet, text; the format from the
extension). `text-cls`: a text field and a label field (strings or integers; the label -> id mapping is sorted and
recorded), scored by accuracy with macro-F1 and the majority baseline beside it. `lm-text`: text packed into
seq_len pieces, scored by perplexity. (`sft`, prompt/completion pairs, is in bench.tasks.sft.)

Bad data is a clear error naming the file, the row and the field, with the columns that exist."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench.tasks.base import TaskConfig
from bench.tasks.batching import ExampleTask, classification_eval, perplexity_eval

FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


class DataError(ValueError):
    """The user's data file cannot be used as asked; the message names the file, row and field."""


def read_rows(path: str) -> list[dict[str, Any]]:
    """Every row of a local data file, through `datasets` (no cache written next to the user's file)."""
    import datasets

    file = Path(path)
    fmt = FORMATS.get(file.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: unknown format {file.suffix!r}; use one of {', '.join(sorted(FORMATS))}")
    kwargs = {"delimiter": "\t"} if file.suffix.lower() == ".tsv" else {}
    try:
        ds = datasets.load_dataset(fmt, data_files=str(file), split="train", **kwargs)
    except Exception as exc:  # noqa: BLE001 - a parser error of the user's file, named
        raise DataError(f"{path}: cannot be read as {fmt}: {type(exc).__name__}: {str(exc)[:200]}") from None
    rows = ds.to_list()
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def field_values(rows: list[dict[str, Any]], path: str, field: str, kind: type | tuple[type, ...]) -> list[Any]:
    """The field of every row, or a DataError naming the first bad row (1-based) and the columns that exist."""
    if field not in rows[0]:
        raise DataError(f"{path}: no field {field!r}; the file has {', '.join(map(repr, rows[0]))}")
    out = []
    for i, row in enumerate(rows, 1):
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip()) or not isinstance(value, kind):
            raise DataError(f"{path}: row {i}: field {field!r} is {value!r}, expected a non-empty {_kind(kind)}")
        out.append(value)
    return out


def _kind(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))


def _existing(path: str, key: str) -> None:
    if path and not Path(path).is_file():
        raise ValueError(f"{key} {path!r} is not a file")


@dataclass
class FileOptions(TaskConfig):
    """A training file and its held-out part: an eval file, or a seeded fraction of the training file."""

    content_fields: ClassVar[tuple[str, ...]] = ("train_file", "eval_file")
    train_file: str = ""
    eval_file: str = ""  # or eval_fraction of train_file, seeded (stratified for classification)
    eval_fraction: float = 0.0

    def __post_init__(self):
        if not self.train_file:
            raise ValueError(f"train_file is required (a file with one of the extensions {', '.join(FORMATS)})")
        _existing(self.train_file, "train_file")
        _existing(self.eval_file, "eval_file")
        if bool(self.eval_file) == (self.eval_fraction > 0):
            raise ValueError("give one of eval_file and eval_fraction (0 < eval_fraction < 1)")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")


def seeded_split(rows: list[Any], fraction: float, seed: int, path: str) -> tuple[list[Any], list[Any]]:
    """(train rows, eval rows): a seeded `fraction` of the rows held out, at least one row on each side."""
    import random

    n_eval = max(1, round(fraction * len(rows)))
    if n_eval >= len(rows):
        raise DataError(f"{path}: {len(rows)} rows cannot be split into train and eval at eval_fraction {fraction}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


@dataclass
class TextClsOptions(FileOptions):
    text_field: str = "text"
    label_field: str = "label"
    group_by_length: bool = False


class TextClassification(ExampleTask):
    """Your own labelled texts (train_file, eval_file or eval_fraction): accuracy, macro-F1, majority baseline."""

    name = "text-cls"
    model_kind = "seq_cls"
    config_cls = TextClsOptions
    num_labels = None  # read from the data: labels_for(config)
    needs_tokenizer = True
    requires = ("datasets",)

    @classmethod
    def labels_for(cls, config: TextClsOptions) -> int:
        labels = field_values(read_rows(config.train_file), config.train_file, config.label_field, (str, int))
        return len(label_map(labels, config.train_file, config.label_field))

    def load(self) -> None:
        cfg = self.config
        train_texts, train_labels = self._read(cfg.train_file)
        if cfg.eval_file:
            eval_texts, eval_labels = self._read(cfg.eval_file)
        else:
            train_texts, train_labels, eval_texts, eval_labels = fraction_split(
                train_texts, train_labels, cfg.eval_fraction, self.seed
            )
        mapping = label_map(train_labels, cfg.train_file, cfg.label_field)
        unknown = sorted(set(map(str, eval_labels)) - set(mapping))
        if unknown:
            raise DataError(f"{cfg.eval_file}: labels {unknown[:5]} never occur in {cfg.train_file}")
        self.label_names = list(mapping)
        self.train = self._encode(train_texts, [mapping[str(v)] for v in train_labels])
        self.eval = self._encode(eval_texts, [mapping[str(v)] for v in eval_labels])
        self.group_by_length = cfg.group_by_length
        counts = [sum(e["label"] == k for e in self.eval) for k in range(len(mapping))]
        self.majority_baseline = max(counts) / len(self.eval)

    def _read(self, path: str) -> tuple[list[str], list[Any]]:
        rows = read_rows(path)
        texts = field_values(rows, path, self.config.text_field, str)
        labels = field_values(rows, path, self.config.label_field, (str, int))
        return texts, labels

    def _encode(self, texts: list[str], labels: list[int]) -> list[dict[str, Any]]:
        enc = self.ctx.tokenizer(texts, truncation=True, max_length=self.seq_len)
        return [{"input_ids": ids, "label": label} for ids, label in zip(enc["input_ids"], labels)]

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        out = classification_eval(self, model, device, batch_size, autocast)
        out["majority_baseline"] = self.majority_baseline
        return out

    def info(self) -> dict[str, Any]:
        return {"labels": self.label_names, "train_examples": len(self.train), "eval_examples": len(self.eval)}


def label_map(labels: list[Any], path: str, field: str) -> dict[str, int]:
    """label (as text) -> class id, sorted (integers numerically): the same for every cell of the suite."""
    distinct = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
    if len(distinct) < 2:
        raise DataError(f"{path}: field {field!r} has one label only ({distinct!r})")
    return {str(v): i for i, v in enumerate(distinct)}


def fraction_split(texts: list[str], labels: list[Any], fraction: float, seed: int):
    """A seeded split stratified by label: (train texts, train labels, eval texts, eval labels)."""
    from bench.tasks.tweets import stratified_split

    items = list(zip(texts, [str(v) for v in labels]))
    n_eval = max(1, round(fraction * len(items)))
    train_idx, eval_idx = stratified_split(items, len(items) - n_eval, n_eval, seed)
    return (
        [texts[i] for i in train_idx],
        [labels[i] for i in train_idx],
        [texts[i] for i in eval_idx],
        [labels[i] for i in eval_idx],
    )


@dataclass
class LMTextOptions(FileOptions):
    text_field: str = "text"  # a .txt file's lines are its `text` field


class LMText(ExampleTask):
    """Your own text (a .txt file or a text field), packed into seq_len pieces; score = held-out perplexity."""

    name = "lm-text"
    model_kind = "causal_lm"
    config_cls = LMTextOptions
    metric = "perplexity"
    higher_is_better = False
    score_range = "perplexity"
    needs_tokenizer = True
    requires = ("datasets",)

    def load(self) -> None:
        cfg = self.config
        train_rows = read_rows(cfg.train_file)
        if cfg.eval_file:
            eval_rows, eval_path = read_rows(cfg.eval_file), cfg.eval_file
        else:
            train_rows, eval_rows = seeded_split(train_rows, cfg.eval_fraction, self.seed, cfg.train_file)
            eval_path = cfg.train_file
        self.train = self._pack(train_rows, cfg.train_file, keep_tail=False)
        self.eval = self._pack(eval_rows, eval_path, keep_tail=True)

    def _pack(self, rows: list[dict[str, Any]], path: str, keep_tail: bool) -> list[dict[str, Any]]:
        """The rows' texts as one token stream (EOS, else the separator, between texts) cut into seq_len pieces;
        the partial last piece is dropped from training and kept for evaluation."""
        field = self.config.text_field
        rows = [r for r in rows if not (isinstance(r.get(field), str) and not r[field].strip())]  # blank lines
        texts = field_values(rows or [{}], path, field, str)
        tok = self.ctx.tokenizer
        stop = tok.eos_token_id if tok.eos_token_id is not None else tok.sep_token_id
        ids: list[int] = []
        for enc in tok(texts, add_special_tokens=False)["input_ids"]:
            ids += enc + ([stop] if stop is not None else [])
        n = self.seq_len
        cut = len(ids) if keep_tail and len(ids) % n > 1 else len(ids) - len(ids) % n
        pieces = [ids[i : i + n] for i in range(0, cut, n)]
        if not pieces:
            need = "2 (nothing to evaluate)" if keep_tail else f"seq_len {n} (nothing to train on)"
            raise DataError(f"{path}: field {field!r} gives {len(ids)} tokens, fewer than {need}")
        return [{"input_ids": p, "labels": p} for p in pieces]

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        return perplexity_eval(self, model, device, batch_size, autocast)

    def info(self) -> dict[str, Any]:
        return {"train_sequences": len(self.train), "eval_sequences": len(self.eval), "seq_len": self.seq_len}
