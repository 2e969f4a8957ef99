"""What the trained adapter costs at inference, as a user deploys it (opt-in phase after save): greedy generation
of the base model alone (the adapter removed with peft's `unload()` on a copy, or the model under a soft prompt),
the unmerged peft model, and a copy merged with `merge_and_unload()`: time to first token (prefill + one token)
and decode ms per token after it, separately, plus the largest logit difference between merged and unmerged (a
merge must not change the model; exactly 0 would mean the adapter did nothing)."""

from __future__ import annotations

import copy
import statistics
import time
from typing import Any

from bench.suite.defaults import InferenceOptions

VARIANTS = ("base", "adapter", "merged")
FIGURES = ("tokens_per_s", "ttft_ms", "decode_ms_per_token")
KEYS = [f"inference_{what}_{variant}" for variant in VARIANTS for what in FIGURES]
NOT_MERGEABLE = "nothing to merge: soft prompts and prefixes add no weights, non-peft methods change the model itself"


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


class TokenClock:
    """A `generate` streamer that notes when each new token reached the host (its first `put` is the prompt).
    generate already waits for the device after every token (its stop check reads the device), so the times
    are the tokens' own, with no extra synchronisation."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def _timed_generate(model: Any, prompt: Any, new_tokens: int, device: str) -> tuple[float, float, float | None]:
    """(whole generation s, time to the first new token s, s per token after it) of one generate call."""
    clock = TokenClock()
    kwargs = dict(do_sample=False, use_cache=True, pad_token_id=0, streamer=clock)
    _sync(device)
    t0 = time.perf_counter()
    model.generate(input_ids=prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **kwargs)
    _sync(device)
    whole = time.perf_counter() - t0
    tokens = clock.times[1:]  # the new tokens' arrivals
    decode = (tokens[-1] - tokens[0]) / (len(tokens) - 1) if len(tokens) > 1 else None
    return whole, tokens[0] - t0, decode


def generation_speed(model: Any, prompt: Any, opts: InferenceOptions, device: str, autocast: Any) -> dict[str, float]:
    """tokens/s of the whole generation, time to first token, and decode ms per token after it, each token timed
    as it arrives within the same generate call (medians over repeats, after a warm-up)."""
    import torch

    runs = []
    with torch.no_grad(), autocast():
        _timed_generate(model, prompt, 2, device)
        for _ in range(opts.repeats):
            runs.append(_timed_generate(model, prompt, opts.new_tokens, device))
    whole, first, decode = (statistics.median(v) if None not in v else None for v in zip(*runs))
    return {
        "tokens_per_s": opts.batch * opts.new_tokens / whole,
        "ttft_ms": 1000 * first,
        "decode_ms_per_token": None if decode is None else 1000 * decode,
    }


def is_tuner(model: Any) -> bool:
    """A peft model whose adapter lives in wrapped layers (LoRA, DoRA, IA3, ...): it can be unloaded and merged."""
    base = getattr(model, "base_model", None)
    return hasattr(model, "peft_config") and hasattr(base, "merge_and_unload") and hasattr(base, "unload")


def deployed_variants(model: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """variant -> the model a user would run; variant -> why it does not exist for this method."""
    models: dict[str, Any] = {"adapter": model}
    why: dict[str, str] = {}
    if is_tuner(model):
        models["base"] = copy.deepcopy(model).unload()
        try:
            models["merged"] = copy.deepcopy(model).merge_and_unload()
        except (AttributeError, NotImplementedError, ValueError) as exc:
            why["merged"] = f"the adapter cannot merge: {type(exc).__name__}: {str(exc)[:120]}"
    elif hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        models["base"] = model.get_base_model()  # prompt learning: the base model is untouched
        why["merged"] = NOT_MERGEABLE
    else:
        why["base"] = "the method changed the model itself: no separate base to run"
        why["merged"] = NOT_MERGEABLE
    return models, why


def run_inference(
    model: Any, kind: str, opts: InferenceOptions, device: str, autocast: Any, seed: int
) -> tuple[dict, dict]:
    """(metrics, missing reasons) of the three variants."""
    import torch

    if kind != "causal_lm":
        return {k: None for k in KEYS}, {k: "generation needs a causal LM" for k in KEYS}
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(4, model.config.vocab_size, (opts.batch, opts.prompt_len), generator=gen).to(device)
    model.eval()
    models, why = deployed_variants(model)
    metrics: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for variant in VARIANTS:
        if variant in why:
            _missing(metrics, missing, variant, why[variant])
            continue
        models[variant].eval()
        for what, value in generation_speed(models[variant], prompt, opts, device, autocast).items():
            metrics[f"inference_{what}_{variant}"] = value
            if value is None:
                missing[f"inference_{what}_{variant}"] = "new_tokens is 1: no token after the first"
    if "merged" in models:
        metrics["merge_logit_max_abs_diff"] = merge_difference(model, models["merged"], prompt, autocast)
    return metrics, missing


def merge_difference(unmerged: Any, merged: Any, prompt: Any, autocast: Any) -> float:
    import torch

    with torch.no_grad(), autocast():
        a = unmerged(input_ids=prompt).logits.float()
        b = merged(input_ids=prompt).logits.float()
    return float((a - b).abs().max())


def _missing(metrics: dict, missing: dict, variant: str, why: str) -> None:
    for what in FIGURES:
        metrics[f"inference_{what}_{variant}"] = None
        missing[f"inference_{what}_{variant}"] = why
    if variant == "merged":
        metrics["merge_logit_max_abs_diff"] = None
        missing["merge_logit_max_abs_diff"] = why
