"""What a cell counts about its model: parameters, FLOPs per token (model and hardware), utilisation, and the
bytes of what it saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def flops_per_token(total_params: int, stats: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """model_flops_per_token: 6 x total parameters (Kaplan et al. 2020; PaLM's MFU convention without its attention
    term: embeddings counted, attention not, the same for every method). hardware_flops_per_token: what the cell's
    model as applied really computed, counted by torch.utils.flop_counter.FlopCounterMode over the first training
    step (a warm-up step, so the counter costs no timed step): forward, backward and the recompute of gradient
    checkpointing, divided by that step's real (non-padding) tokens."""
    metrics: dict[str, Any] = {"model_flops_per_token": 6.0 * total_params}
    if stats.counted_flops is None or not stats.counted_tokens:
        reason = "counted over the first warm-up step; this cell has warmup_steps 0"
        return {**metrics, "hardware_flops_per_token": None}, {"hardware_flops_per_token": reason}
    return {**metrics, "hardware_flops_per_token": stats.counted_flops / stats.counted_tokens}, {}


def utilisation(metrics: dict[str, Any], missing: dict[str, str], env: dict[str, Any], compute_dtype: str) -> None:
    """mfu and hfu: FLOPs per token x tokens/s / the GPU's dense peak for the precision used."""
    from bench.env.facts import peak_flops

    peak = peak_flops(env.get("gpu_name"), compute_dtype)
    reason = None
    if env.get("device") != "cuda":
        reason = "utilisation is estimated on GPUs only"
    elif peak is None:
        reason = f"no {compute_dtype} peak in the table for {env.get('gpu_name')!r} (bench/env/facts.py)"
    elif metrics.get("tokens_per_s") is None:
        reason = "no timed steps"
    for key, flops in (("mfu", "model_flops_per_token"), ("hfu", "hardware_flops_per_token")):
        if reason is None and metrics.get(flops) is None:
            metrics[key], missing[key] = None, missing.get(flops, f"{flops} is unknown")
        elif reason is None:
            metrics[key] = metrics[flops] * metrics["tokens_per_s"] / peak
        else:
            metrics[key], missing[key] = None, reason


def checkpoint_summary(path: Path) -> dict[str, Any]:
    """Bytes of the weight files (what the method's checkpoint costs to store) and of everything written."""
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    weights = {k: v for k, v in files.items() if k.endswith(WEIGHT_SUFFIXES)}
    return {"files": files, "weight_bytes": sum(weights.values()), "total_bytes": sum(files.values())}
