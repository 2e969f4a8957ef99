"""Tasks whose data comes from the Hugging Face hub, for GPU suites with hub access. The loading code is real;
offline it fails at once with a message naming the dataset (tested), never with a silent substitute."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bench.tasks.base import IGNORE, TaskConfig
from bench.tasks.batching import ExampleTask, batched, classification_eval, pack, perplexity_eval


class HubUnavailable(RuntimeError):
    pass


def load_hub_dataset(task: str, path: str, name: str | None, split: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split)
    except Exception as exc:  # ConnectionError, OfflineModeIsEnabled, FileNotFoundError, ...
        raise HubUnavailable(
            f"task {task!r} loads dataset {path}{'/' + name if name else ''} (split {split}) from the Hugging Face "
            f"hub, which is not reachable here ({type(exc).__name__}: {str(exc)[:200]}); use an offline task "
            "(tweet-sentiment, reverse, toy-cls, random-lm) or run where the hub is reachable"
        ) from exc


@dataclass
class HubOptions(TaskConfig):
    n_train: int = 2000
    n_eval: int = 500


class SST2(ExampleTask):
    """GLUE SST-2 sentence sentiment (binary), accuracy and macro-F1 on the validation split."""

    name = "sst2"
    model_kind = "seq_cls"
    config_cls = HubOptions
    num_labels = 2
    needs_tokenizer = True
    requires = ("datasets",)

    def load(self) -> None:
        tokenizer = self.ctx.tokenizer
        train = load_hub_dataset(self.name, "glue", "sst2", "train").shuffle(seed=self.seed)
        val = load_hub_dataset(self.name, "glue", "sst2", "validation")

        def encode(ds: Any, n: int) -> list[dict[str, Any]]:
            rows = ds.select(range(min(n, len(ds))))
            enc = tokenizer(rows["sentence"], truncation=True, max_length=self.seq_len)
            return [{"input_ids": ids, "label": y} for ids, y in zip(enc["input_ids"], rows["label"])]

        self.train, self.eval = encode(train, self.config.n_train), encode(val, self.config.n_eval)

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        return classification_eval(self, model, device, batch_size, autocast)


def final_number(text: str) -> str | None:
    """The last number in a text, commas removed (GSM8K answers end with '#### 42')."""
    nums = re.findall(r"-?\d[\d,]*\.?\d*", text)
    return nums[-1].replace(",", "").rstrip(".") if nums else None


@dataclass
class GSMOptions(TaskConfig):
    n_train: int = 2000
    n_eval: int = 200
    max_new_tokens: int = 256
    packing: bool = False  # concatenate examples and cut to seq_len (no padding, one shape), as TRL/torchtune do


class GSM8KSFT(ExampleTask):
    """SFT on a MetaMathQA subset; GSM8K test exact match of the final number under greedy decoding."""

    name = "gsm8k-sft"
    model_kind = "causal_lm"
    config_cls = GSMOptions
    metric = "exact_match"
    needs_tokenizer = True
    requires = ("datasets",)

    def load(self) -> None:
        tokenizer = self.ctx.tokenizer
        train = load_hub_dataset(self.name, "meta-math/MetaMathQA", None, "train").shuffle(seed=self.seed)
        test = load_hub_dataset(self.name, "openai/gsm8k", "main", "test")
        self.train = []
        for row in train.select(range(min(self.config.n_train, len(train)))):
            prompt = tokenizer(f"Question: {row['query']}\nAnswer: ")["input_ids"]
            answer = tokenizer(row["response"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            ids = (prompt + answer)[: self.seq_len]
            self.train.append({"input_ids": ids, "labels": ([IGNORE] * len(prompt) + answer)[: self.seq_len]})
        if self.config.packing:  # answers end with EOS already: no separator
            self.train = pack(self.train, self.seq_len, None)
        self.eval = [
            {"prompt": f"Question: {r['question']}\nAnswer: ", "answer": final_number(r["answer"])}
            for r in test.select(range(min(self.config.n_eval, len(test))))
        ]

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        import torch

        from bench.scoring import exact_match

        tok = self.ctx.tokenizer
        tok.padding_side = "left"
        preds = []
        with torch.no_grad(), autocast():
            for chunk in batched(self.eval, batch_size):
                enc = tok([e["prompt"] for e in chunk], return_tensors="pt", padding=True).to(device)
                out = model.generate(
                    **enc, max_new_tokens=self.config.max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
                )
                texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
                preds.extend(final_number(t) or "" for t in texts)
        em = exact_match([[p] for p in preds], [[e["answer"]] for e in self.eval])
        return {"score": em, "exact_match": em}


@dataclass
class PerplexityOptions(TaskConfig):
    n_train: int = 2000
    n_eval: int = 200
    dataset: str = "wikitext"
    config: str = "wikitext-2-raw-v1"


class Perplexity(ExampleTask):
    """Causal-LM training on a text corpus packed into seq_len pieces; score = held-out perplexity (lower: better)."""

    name = "perplexity"
    model_kind = "causal_lm"
    config_cls = PerplexityOptions
    metric = "perplexity"
    higher_is_better = False
    score_range = "perplexity"
    needs_tokenizer = True
    requires = ("datasets",)

    def load(self) -> None:
        tokenizer = self.ctx.tokenizer

        def chunks(split: str, n: int) -> list[dict[str, Any]]:
            ds = load_hub_dataset(self.name, self.config.dataset, self.config.config, split)
            text = "\n".join(t for t in ds["text"] if t.strip())
            ids = tokenizer(text)["input_ids"]
            out = [ids[i : i + self.seq_len] for i in range(0, len(ids) - self.seq_len, self.seq_len)][:n]
            return [{"input_ids": c, "labels": c} for c in out]

        self.train, self.eval = chunks("train", self.config.n_train), chunks("test", self.config.n_eval)

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        return perplexity_eval(self, model, device, batch_size, autocast)
