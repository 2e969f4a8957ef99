"""`sft`: supervised fine-tuning on your own prompt/completion pairs (or chat turns) from a local file.

The loss is on completion tokens only (prompt positions are labelled -100). The score is exact match of the greedy
completion against the reference, both decoded by the cell's tokenizer and whitespace-normalised; token-F1 (word
overlap, as SQuAD's) and the completion LM loss stand beside it. Greedy decoding has no KV cache and batches
prompts of equal length together (no padding), so every method decodes the same way; it stops at the tokenizer's
EOS (its separator where it has none, as BERT's) or after `max_new_tokens`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.tasks.base import IGNORE
from bench.tasks.batching import ExampleTask, batched, lm_loss_eval, pack
from bench.tasks.local_files import DataError, FileOptions, field_values, read_rows, seeded_split


@dataclass
class SFTOptions(FileOptions):
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = ""  # chat turns [{role, content}, ...]: the last (assistant) turn is the completion
    packing: bool = False  # concatenate examples and cut to seq_len (no padding, one shape), as TRL/torchtune do
    max_new_tokens: int = 32

    def __post_init__(self):
        super().__post_init__()
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


def normalise(text: str) -> str:
    return " ".join(text.split())


def token_f1(pred: str, ref: str) -> float:
    """Word-overlap F1 of two whitespace-tokenised strings (SQuAD's definition; both empty: 1)."""
    p, r = pred.split(), ref.split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def stop_id(tokenizer: Any) -> int | None:
    """The token that ends a completion: EOS, else the separator (BERT-style tokenizers), else none (length)."""
    return tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id


class SFT(ExampleTask):
    """Your own prompt/completion pairs or chat turns: loss on completions, greedy exact match, token-F1."""

    name = "sft"
    model_kind = "causal_lm"
    config_cls = SFTOptions
    metric = "exact_match"
    needs_tokenizer = True
    requires = ("datasets",)

    def load(self) -> None:
        cfg = self.config
        self.stop = stop_id(self.ctx.tokenizer)
        train_pairs = self._pairs(cfg.train_file)
        if cfg.eval_file:
            eval_pairs = self._pairs(cfg.eval_file)
        else:
            train_pairs, eval_pairs = seeded_split(train_pairs, cfg.eval_fraction, self.seed, cfg.train_file)
        self.train, dropped_train = self._encode(train_pairs)
        self.eval, dropped_eval = self._encode(eval_pairs)
        for split, examples, path in (("train", self.train, cfg.train_file), ("eval", self.eval, cfg.eval_file)):
            if not examples:
                where = path or cfg.train_file
                raise DataError(f"{where}: no {split} example whose prompt fits in seq_len {self.seq_len}")
        self.dropped = {"train": dropped_train, "eval": dropped_eval}
        if cfg.packing:  # completions end with the stop token already: no separator
            self.train = pack(self.train, self.seq_len, None)

    def _pairs(self, path: str) -> list[tuple[str, str, bool]]:
        """(prompt text, completion text, whether the prompt is chat-templated: its special tokens are in it)."""
        rows = read_rows(path)
        cfg = self.config
        if cfg.messages_field:
            turns = field_values(rows, path, cfg.messages_field, list)
            return [(*self._chat(t, path, i), True) for i, t in enumerate(turns, 1)]
        prompts = field_values(rows, path, cfg.prompt_field, str)
        return [(p, c, False) for p, c in zip(prompts, field_values(rows, path, cfg.completion_field, str))]

    def _chat(self, turns: list[Any], path: str, row: int) -> tuple[str, str]:
        """(the conversation before the last turn as the chat template renders it, the last turn's content)."""
        tok = self.ctx.tokenizer
        where = f"{path}: row {row}: field {self.config.messages_field!r}"
        if not getattr(tok, "chat_template", None):
            raise DataError(f"{where}: the tokenizer has no chat template; use prompt_field and completion_field")
        if not all(isinstance(t, dict) and isinstance(t.get("content"), str) and t.get("role") for t in turns):
            raise DataError(f"{where}: expected a list of {{role, content}} turns, got {str(turns)[:120]}")
        if len(turns) < 2 or turns[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last of two or more turns must be the assistant's (the completion)")
        prompt = tok.apply_chat_template(turns[:-1], tokenize=False, add_generation_prompt=True)
        return prompt, turns[-1]["content"]

    def _encode(self, pairs: list[tuple[str, str, bool]]) -> tuple[list[dict[str, Any]], int]:
        """Examples whose prompt leaves room for a target within seq_len, and how many were dropped."""
        tok = self.ctx.tokenizer
        out, dropped = [], 0
        for prompt_text, completion, templated in pairs:
            prompt = tok(prompt_text, add_special_tokens=not templated)["input_ids"]
            target = tok(completion, add_special_tokens=False)["input_ids"]
            answer = target + ([self.stop] if self.stop is not None else [])
            if len(prompt) >= self.seq_len:
                dropped += 1
                continue
            ids = (prompt + answer)[: self.seq_len]
            labels = ([IGNORE] * len(prompt) + answer)[: self.seq_len]
            out.append({"input_ids": ids, "labels": labels, "prompt": prompt, "target": target})
        return out, dropped

    def evaluate(self, model, device, batch_size, autocast) -> dict[str, float]:
        tok = self.ctx.tokenizer
        generated = self.greedy(model, device, batch_size, autocast)
        preds = [normalise(tok.decode(g, skip_special_tokens=True)) for g in generated]
        refs = [normalise(tok.decode(e["target"], skip_special_tokens=True)) for e in self.eval]
        em = sum(p == r for p, r in zip(preds, refs)) / len(refs)
        f1 = sum(token_f1(p, r) for p, r in zip(preds, refs)) / len(refs)
        loss = lm_loss_eval(self, model, device, batch_size, autocast, self.eval)
        return {"score": em, "exact_match": em, "token_f1": f1, "completion_loss": loss}

    def greedy(self, model, device, batch_size, autocast) -> list[list[int]]:
        prompts = [e["prompt"] for e in self.eval]
        return greedy(model, prompts, device, batch_size, autocast, self.config.max_new_tokens, self.stop)

    def info(self) -> dict[str, Any]:
        return {
            "train_examples": len(self.train),
            "eval_examples": len(self.eval),
            "dropped_prompt_too_long": self.dropped,
            "packed": self.config.packing,
            "stop_token_id": self.stop,
        }


def greedy(
    model: Any, prompts: list[list[int]], device: str, batch_size: int, autocast: Any, max_new: int, stop: int | None
) -> list[list[int]]:
    """Each prompt's greedy continuation of up to `max_new` tokens, cut before the first `stop` token; prompts of
    equal length are batched together (no padding), no KV cache: every method decodes the same way."""
    import torch

    by_length: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        by_length.setdefault(len(p), []).append(i)
    out: list[list[int]] = [[] for _ in prompts]
    with torch.no_grad(), autocast():
        for n, group in by_length.items():
            for chunk in batched(group, batch_size):
                ids = torch.tensor([prompts[i] for i in chunk], device=device)
                done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
                for _ in range(max_new):
                    nxt = model(input_ids=ids).logits[:, -1].argmax(-1)
                    if stop is not None:
                        done |= nxt == stop
                    ids = torch.cat([ids, nxt[:, None]], dim=1)
                    if bool(done.all()):
                        break
                for row, i in zip(ids[:, n:].tolist(), chunk):
                    out[i] = row[: row.index(stop)] if stop in row else row
    return out
