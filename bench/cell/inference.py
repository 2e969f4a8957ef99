"""What the trained adapter costs at inference (opt-in phase after save): greedy generation tokens/s and per-token
latency of the base model (adapter disabled), the unmerged adapter, and the merged model where the method can
merge, plus the largest logit difference between merged and unmerged (a merge must not change the model)."""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.suite.defaults import InferenceOptions

KEYS = [
    f"inference_{what}_{variant}"
    for variant in ("base", "adapter", "merged")
    for what in ("tokens_per_s", "ms_per_token")
]


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def generation_speed(
    model: Any, prompt: Any, opts: InferenceOptions, device: str, autocast: Any
) -> tuple[float, float]:
    """(tokens/s, ms per token) of greedy generation of exactly new_tokens, median over repeats after a warm-up."""
    import torch

    kwargs = dict(do_sample=False, use_cache=True, pad_token_id=0)
    times = []
    with torch.no_grad(), autocast():
        model.generate(input_ids=prompt, max_new_tokens=2, min_new_tokens=2, **kwargs)
        for _ in range(opts.repeats):
            _sync(device)
            t0 = time.perf_counter()
            model.generate(input_ids=prompt, max_new_tokens=opts.new_tokens, min_new_tokens=opts.new_tokens, **kwargs)
            _sync(device)
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return opts.batch * opts.new_tokens / t, 1000 * t / opts.new_tokens


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
    metrics, missing = {}, {}

    def record(variant: str) -> None:
        tps, ms = generation_speed(model, prompt, opts, device, autocast)
        metrics[f"inference_tokens_per_s_{variant}"], metrics[f"inference_ms_per_token_{variant}"] = tps, ms

    record("adapter")
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        with model.disable_adapter():
            record("base")
    else:
        _missing(metrics, missing, "base", "the method changed the model itself: no separate base to disable")
    _merged(model, prompt, autocast, record, metrics, missing)
    return metrics, missing


def _merged(model: Any, prompt: Any, autocast: Any, record: Any, metrics: dict, missing: dict) -> None:
    import torch

    if not hasattr(model, "merge_adapter"):
        _missing(
            metrics,
            missing,
            "merged",
            "nothing to merge: soft prompts and prefixes add no weights, non-peft methods change the model itself",
        )
        return
    with torch.no_grad(), autocast():
        unmerged = model(input_ids=prompt).logits.float()
        try:
            model.merge_adapter()
        except (AttributeError, NotImplementedError, ValueError) as exc:
            _missing(metrics, missing, "merged", f"the adapter cannot merge: {type(exc).__name__}: {str(exc)[:120]}")
            return
        merged = model(input_ids=prompt).logits.float()
    metrics["merge_logit_max_abs_diff"] = float((merged - unmerged).abs().max())
    record("merged")
    model.unmerge_adapter()


def _missing(metrics: dict, missing: dict, variant: str, why: str) -> None:
    for what in ("tokens_per_s", "ms_per_token"):
        metrics[f"inference_{what}_{variant}"] = None
        missing[f"inference_{what}_{variant}"] = why
    if variant == "merged":
        metrics["merge_logit_max_abs_diff"] = None
        missing["merge_logit_max_abs_diff"] = why
