"""Generated-data tasks for models with random weights: they need no tokenizer, hub or download.

Every record of these tasks says `synthetic: true`: they show that training moves a score, not how good a
method is on language.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bench.tasks.base import IGNORE, TaskConfig
from bench.tasks.batching import ExampleTask, batched, classification_eval, lm_loss_eval

FIRST_SYMBOL = 4  # ids 0..3: pad, bos, eos, separator


@dataclass
class SizeOptions(TaskConfig):
    n_train: int = 512
    n_eval: int = 128

    def __post_init__(self):
        if self.n_train < 1 or self.n_eval < 1:
            raise ValueError("n_train and n_eval must be >= 1")


class ToyClassification(ExampleTask):
    """Label 1 when most tokens come from the lower half of the vocabulary; variable lengths."""

    name = "toy-cls"
    model_kind = "seq_cls"
    config_cls = SizeOptions
    num_labels = 2
    synthetic = True

    def load(self) -> None:
        model_config = self.ctx.model_config
        rng = random.Random(self.seed)
        vocab = model_config.vocab_size
        half = (vocab + FIRST_SYMBOL) // 2

        def make() -> dict[str, Any]:
            n = rng.randint(max(2, self.seq_len // 2), self.seq_len)
            low = rng.random() < 0.5
            bias = 0.75 if low else 0.25
            ids = [
                rng.randrange(FIRST_SYMBOL, half) if rng.random() < bias else rng.randrange(half, vocab)
                for _ in range(n)
            ]
            return {"input_ids": ids, "label": int(sum(i < half for i in ids) * 2 > n)}

        self.train = [make() for _ in range(self.config.n_train)]
        self.eval = [make() for _ in range(self.config.n_eval)]

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        return classification_eval(self, model, device, batch_size, autocast)


@dataclass
class RandomLMOptions(SizeOptions):
    variable_length: bool = False  # lengths drawn in [seq_len/2, seq_len] and padded per batch (costs padding)


class RandomLM(ExampleTask):
    """Next-token prediction on random tokens: fixed `seq_len` sequences by default (a cost task: one shape, no
    padding, no attention mask), random lengths with `variable_length: true`; score = held-out LM loss."""

    name = "random-lm"
    model_kind = "causal_lm"
    config_cls = RandomLMOptions
    metric = "eval_loss"
    higher_is_better = False
    score_range = "nats/token"
    synthetic = True

    def load(self) -> None:
        model_config = self.ctx.model_config
        rng = random.Random(self.seed)
        vocab = model_config.vocab_size

        def make() -> dict[str, Any]:
            n = rng.randint(max(2, self.seq_len // 2), self.seq_len) if self.config.variable_length else self.seq_len
            ids = [rng.randrange(FIRST_SYMBOL, vocab) for _ in range(n)]
            return {"input_ids": ids, "labels": ids}

        self.train = [make() for _ in range(self.config.n_train)]
        self.eval = [make() for _ in range(self.config.n_eval)]

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        loss = lm_loss_eval(self, model, device, batch_size, autocast, self.eval)
        return {"score": loss, "eval_loss": loss}


@dataclass
class ReverseOptions(TaskConfig):
    length: int = 4
    alphabet: int = 8
    n_train: int = 2000
    n_eval: int = 200

    def __post_init__(self):
        if self.length < 1 or self.alphabet < 2:
            raise ValueError("length must be >= 1 and alphabet >= 2")


class Reverse(ExampleTask):
    """`BOS s1..sk SEP` -> `sk..s1`: a learnable generation task scored by greedy exact match."""

    name = "reverse"
    model_kind = "causal_lm"
    config_cls = ReverseOptions
    metric = "exact_match"
    synthetic = True

    def load(self) -> None:
        model_config = self.ctx.model_config
        cfg = self.config
        if FIRST_SYMBOL + cfg.alphabet > model_config.vocab_size:
            raise ValueError(f"alphabet {cfg.alphabet} does not fit vocabulary {model_config.vocab_size}")
        rng = random.Random(self.seed)
        seen: set[tuple[int, ...]] = set()
        examples = []
        limit = cfg.alphabet**cfg.length
        while len(examples) < min(cfg.n_train + cfg.n_eval, limit):
            sym = tuple(rng.randrange(FIRST_SYMBOL, FIRST_SYMBOL + cfg.alphabet) for _ in range(cfg.length))
            if sym in seen:
                continue  # held-out sequences never appear in training
            seen.add(sym)
            prompt = [1, *sym, 3]
            target = list(reversed(sym))
            examples.append(
                {
                    "input_ids": prompt + target,
                    "labels": [IGNORE] * len(prompt) + target,
                    "prompt": prompt,
                    "target": target,
                }
            )
        n_eval = min(cfg.n_eval, len(examples) // 5)
        self.eval, self.train = examples[:n_eval], examples[n_eval:]

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        import torch

        from bench.scoring import exact_match

        preds, refs = [], []
        with torch.no_grad(), autocast():
            for chunk in batched(self.eval, batch_size):
                ids = torch.tensor([e["prompt"] for e in chunk], device=device)
                for _ in range(self.config.length):  # greedy, no cache: works for every method alike
                    logits = model(input_ids=ids).logits
                    ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
                preds.extend(ids[:, -self.config.length :].tolist())
                refs.extend(e["target"] for e in chunk)
        em = exact_match(preds, refs)
        loss = lm_loss_eval(self, model, device, batch_size, autocast, self.eval)
        return {"score": em, "exact_match": em, "eval_loss": loss}
