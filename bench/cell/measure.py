"""What a cell counts about its model: parameters, FLOPs per token (model and hardware), utilisation, and the
bytes of what it saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.models.params import count_params, numel

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _is_matmul(module: Any) -> bool:
    return type(module).__name__ in (
        "Linear",
        "Linear4bit",
        "Linear8bitLt",
        "Conv1D",
        "NonDynamicallyQuantizableLinear",
    )


def matmul_params(model: Any) -> tuple[int, int, int]:
    """(weights of every matmul layer, of the trainable ones, of those at or after the first trainable parameter
    in registration order: the layers that must back-propagate activation gradients)."""
    total = trainable = downstream = 0
    seen_trainable = False
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if any(p.requires_grad for p in own):
            seen_trainable = True
        if not _is_matmul(module):
            continue
        weight = getattr(module, "weight", None)
        if weight is None:
            continue
        n = numel(weight)
        total += n
        trainable += n if weight.requires_grad else 0
        downstream += n if seen_trainable else 0
    return total, trainable, downstream


def attention_flops_per_token(config: Any, seq_len: int) -> float:
    """Forward attention-score FLOPs per token (QK^T and AV), halved for causal masking."""
    layers = getattr(config, "num_hidden_layers", 0) or 0
    heads = getattr(config, "num_attention_heads", 0) or 0
    head_dim = getattr(config, "head_dim", None) or (getattr(config, "hidden_size", 0) // max(heads, 1))
    causal = not getattr(config, "is_encoder_decoder", False) and getattr(config, "model_type", "") not in (
        "bert",
        "roberta",
        "deberta",
        "distilbert",
        "electra",
    )
    return 4 * layers * seq_len * heads * head_dim * (0.5 if causal else 1.0)


def flops_per_token(model: Any, config: Any, seq_len: int, input_level: bool, grad_ckpt: bool) -> dict[str, float]:
    """model_flops_per_token: 6 x total params (the usual MFU convention for every method).
    hardware_flops_per_token: what the method computes: forward (2 x matmul weights + attention), activation
    gradients (2 x matmul weights from the first trainable layer on, or all for input-level methods, + 2 x
    attention), weight gradients of trainable matmuls only (2 x), and a second forward with gradient
    checkpointing."""
    _, total = count_params(model)
    mm, mm_trainable, downstream = matmul_params(model)
    attn = attention_flops_per_token(config, seq_len)
    backward_act = 2 * (mm if input_level else downstream) + 2 * attn
    forward = 2 * mm + attn
    hardware = forward + backward_act + 2 * mm_trainable + (forward if grad_ckpt else 0)
    return {"model_flops_per_token": 6.0 * total, "hardware_flops_per_token": float(hardware)}


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
        if reason is None:
            metrics[key] = metrics[flops] * metrics["tokens_per_s"] / peak
        else:
            metrics[key], missing[key] = None, reason


def checkpoint_summary(path: Path) -> dict[str, Any]:
    """Bytes of the weight files (what the method's checkpoint costs to store) and of everything written."""
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    weights = {k: v for k, v in files.items() if k.endswith(WEIGHT_SUFFIXES)}
    return {"files": files, "weight_bytes": sum(weights.values()), "total_bytes": sum(files.values())}
