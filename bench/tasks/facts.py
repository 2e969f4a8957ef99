"""`facts`: knowledge injection. Seeded synthetic entity -> attribute facts are trained under one phrasing and
scored by greedy recall of the attribute: under that phrasing (`recall`, the score) and under held-out paraphrases
(`score_paraphrase`); forgetting (general-text loss after minus before) stands beside them as for every causal-LM
task.

A `bridge_fraction` of the facts is also trained under every paraphrase, so a model can learn that the phrasings
ask the same question; `score_paraphrase` is measured on the other facts only, which were never seen paraphrased.
With a tokenizer the facts are text (made-up names, real city names, English templates); without one (random-weight
models) they are token ids, so a model without a tokenizer can still show which method stores new facts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from bench.tasks.base import IGNORE, TaskConfig
from bench.tasks.batching import ExampleTask
from bench.tasks.sft import greedy

TEMPLATES = (  # the first is the training phrasing
    "{e} lives in the city of",
    "The home town of {e} is",
    "{e} has a house in the city of",
    "Ask where {e} lives and you hear",
)
VALUES = (
    "paris london tokyo cairo lima oslo rome delhi berlin madrid dublin vienna prague athens lisbon warsaw "
    "sydney toronto chicago boston denver seattle miami dallas"
).split()
SYLLABLES = "ka lo mi ra ven tor sel dun bri qua zel mor fen tal rik osa".split()
FIRST_ENTITY = 16  # token-id facts: 0-3 special, 4-15 relation tokens


@dataclass
class FactsOptions(TaskConfig):
    n_facts: int = 64
    n_values: int = 16  # distinct attribute values
    paraphrases: int = 2  # held-out phrasings scored (text: at most 3)
    bridge_fraction: float = 0.5  # facts also trained under every paraphrase

    def __post_init__(self):
        if self.n_facts < 2 or self.n_values < 2:
            raise ValueError("n_facts and n_values must be >= 2")
        if not 1 <= self.paraphrases <= 5:
            raise ValueError(f"paraphrases must be in 1..5, got {self.paraphrases}")
        if not 0 <= self.bridge_fraction < 1:
            raise ValueError(f"bridge_fraction must be in [0, 1), got {self.bridge_fraction}")


class Facts(ExampleTask):
    """Knowledge injection: recall of new entity -> attribute facts, under the trained and under held-out phrasings."""

    name = "facts"
    model_kind = "causal_lm"
    config_cls = FactsOptions
    metric = "recall"
    synthetic = True

    def load(self) -> None:
        cfg = self.config
        rng = random.Random(self.seed)
        facts = self._text_facts(rng) if self.ctx.tokenizer is not None else self._token_facts(rng)
        bridge = set(rng.sample(range(len(facts)), round(cfg.bridge_fraction * len(facts))))
        phrasings = range(1, cfg.paraphrases + 1)
        self.train = [facts[i][0] for i in range(len(facts))]
        self.train += [facts[i][k] for i in sorted(bridge) for k in phrasings]
        self.eval = [f[0] for f in facts]
        self.eval_paraphrase = [facts[i][k] for i in range(len(facts)) if i not in bridge for k in phrasings]
        self.n_bridge = len(bridge)

    def _example(self, prompt: list[int], target: list[int]) -> dict[str, Any]:
        if len(prompt) + len(target) > self.seq_len:
            raise ValueError(f"a fact takes {len(prompt) + len(target)} tokens; raise seq_len to at least that")
        return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target, "prompt": prompt,
                "target": target}  # fmt: skip

    def _token_facts(self, rng: random.Random) -> list[list[dict[str, Any]]]:
        """Per fact, its example under each phrasing: [BOS, r_k, r_k', e1, e2, SEP] -> [value]."""
        cfg = self.config
        vocab = self.ctx.model_config.vocab_size
        first_value = vocab - cfg.n_values
        if first_value - FIRST_ENTITY < 4 or 4 + 2 * (cfg.paraphrases + 1) > FIRST_ENTITY:
            raise ValueError(f"vocabulary {vocab} is too small for {cfg.n_values} values and distinct entities")
        entities: set[tuple[int, int]] = set()
        span = range(FIRST_ENTITY, first_value)
        if len(span) ** 2 < cfg.n_facts:
            raise ValueError(f"vocabulary {vocab} holds fewer than n_facts {cfg.n_facts} distinct entities")
        while len(entities) < cfg.n_facts:
            entities.add((rng.choice(span), rng.choice(span)))
        out = []
        for e in sorted(entities, key=lambda _: rng.random()):
            value = first_value + rng.randrange(cfg.n_values)
            out.append([self._example([1, 4 + 2 * k, 5 + 2 * k, *e, 3], [value]) for k in range(cfg.paraphrases + 1)])
        return out

    def _text_facts(self, rng: random.Random) -> list[list[dict[str, Any]]]:
        cfg = self.config
        if cfg.paraphrases >= len(TEMPLATES) or cfg.n_values > len(VALUES):
            raise ValueError(f"text facts have {len(TEMPLATES) - 1} paraphrases and {len(VALUES)} values at most")
        tok = self.ctx.tokenizer
        names: set[str] = set()
        while len(names) < cfg.n_facts:
            word = lambda: "".join(rng.choice(SYLLABLES) for _ in range(2)).capitalize()  # noqa: E731
            names.add(f"{word()} {word()}")
        values = VALUES[: cfg.n_values]
        out = []
        for name in sorted(names, key=lambda _: rng.random()):
            target = tok(" " + rng.choice(values), add_special_tokens=False)["input_ids"]
            prompts = [tok(t.format(e=name))["input_ids"] for t in TEMPLATES[: cfg.paraphrases + 1]]
            if tok.sep_token_id is not None and tok.eos_token_id is None:  # BERT-style: drop the trailing SEP
                prompts = [p[:-1] if p[-1] == tok.sep_token_id else p for p in prompts]
            out.append([self._example(p, target) for p in prompts])
        return out

    def recall(self, model, examples, device, batch_size, autocast) -> float:
        longest = max(len(e["target"]) for e in examples)
        got = greedy(model, [e["prompt"] for e in examples], device, batch_size, autocast, longest, None)
        return sum(g[: len(e["target"])] == e["target"] for g, e in zip(got, examples)) / len(examples)

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        recall = self.recall(model, self.eval, device, batch_size, autocast)
        out = {"score": recall, "recall": recall}
        if self.eval_paraphrase:
            out["score_paraphrase"] = self.recall(model, self.eval_paraphrase, device, batch_size, autocast)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "facts": len(self.eval),
            "bridge_facts": self.n_bridge,
            "paraphrase_items": len(self.eval_paraphrase),
            "kind": "text" if self.ctx.tokenizer is not None else "token ids",
        }
