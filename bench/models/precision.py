"""What each precision label means in practice, and a check that a cell really ran that way.

fp32: everything fp32. fp16/bf16: trainable weights fp32 (master), frozen base weights stored in the half
type, compute under autocast via accelerate (fp16 with a gradient scaler). int8/nf4: bitsandbytes-quantized
frozen base (nf4 with double quantization), bf16 compute, adapter weights fp32.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from bench.errors import Unsupported

QUANTIZED = ("int8", "nf4")


@dataclass(frozen=True)
class PrecisionPolicy:
    name: str
    mixed_precision: str  # accelerate's: "no" | "fp16" | "bf16"
    half_dtype: str | None  # dtype of frozen (non-quantized) base weights, None = keep fp32
    quantized: bool
    emulated: bool = False  # bf16 compute on a CPU without native bf16 (suite opted in)

    @property
    def compute_dtype(self) -> str:
        return {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}[self.mixed_precision]

    def storage_dtype(self, trains_base: bool) -> str:
        """dtype to build or load a non-quantized base in: the half type unless the method trains the base
        weights themselves (those keep fp32 master weights)."""
        return "float32" if trains_base or self.half_dtype is None else self.half_dtype


LABELS = {
    "fp32": PrecisionPolicy("fp32", "no", None, False),
    "fp16": PrecisionPolicy("fp16", "fp16", "float16", False),
    "bf16": PrecisionPolicy("bf16", "bf16", "bfloat16", False),
    "int8": PrecisionPolicy("int8", "bf16", None, True),
    "nf4": PrecisionPolicy("nf4", "bf16", None, True),
}


def label_policy(name: str) -> PrecisionPolicy:
    """What a precision label means, without checking this machine (estimates before a run)."""
    return LABELS[name]


def precision_policy(name: str, device: str, allow_emulated: bool = False) -> PrecisionPolicy:
    """The policy for `name` on `device` ("cpu" | "cuda"); Unsupported where it cannot be honoured."""
    if name not in LABELS:
        raise ValueError(f"unknown precision {name!r}")
    policy = LABELS[name]
    if name == "fp16" and device != "cuda":
        raise Unsupported(
            "fp16 mixed precision needs CUDA: accelerate runs fp16 autocast and gradient "
            "scaling only on GPU, on CPU it would silently train in fp32"
        )
    if name == "bf16" and device == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise Unsupported(f"bf16 is not supported on {torch.cuda.get_device_name()}")
    if policy.quantized:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise Unsupported(f"{name} needs bitsandbytes, which does not import here: {exc}") from exc
    if policy.mixed_precision == "bf16":
        return replace(policy, emulated=_emulated_bf16(name, device, allow_emulated))
    return policy


def _emulated_bf16(name: str, device: str, allow_emulated: bool) -> bool:
    """False where bf16 compute is native; True where the suite opted into emulation; else Unsupported."""
    if device != "cpu":
        return False
    from bench.env.cpu import facts

    cpu = facts()
    if cpu.native_bf16:
        return False
    if not allow_emulated:
        what = "computes in bf16" if name == "bf16" else f"computes in bf16 (its {name} base dequantizes to bf16)"
        raise Unsupported(
            f"precision {name} {what}, but {cpu.missing_bf16()}; "
            "set allow_emulated_precision: true in the suite to run it anyway (recorded emulated: true)"
        )
    return True


def quantization_config(policy: PrecisionPolicy, model_kind: str) -> Any:
    """The bitsandbytes config of a quantized policy (None otherwise)."""
    if not policy.quantized:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    skip = ["classifier", "score", "pre_classifier", "lm_head"] if model_kind == "seq_cls" else ["lm_head"]
    if policy.name == "nf4":
        qc = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=skip,
        )
    else:
        qc = BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return qc


def cast_frozen(model: Any, policy: PrecisionPolicy) -> None:
    """Store frozen floating-point weights in the policy's half type; trainable ones stay fp32.

    A module whose own parameters are partly trainable (BitFit: frozen weight, trained bias) keeps them all in
    fp32, since kernels like layer_norm need one dtype for weight and bias."""
    if policy.half_dtype is None:
        return
    import torch

    half = getattr(torch, policy.half_dtype)
    for module in model.modules():
        own = list(module.parameters(recurse=False))
        mixed = any(p.requires_grad for p in own)
        for p in own:
            if p.requires_grad or mixed:
                p.data = p.data.float()
            elif p.dtype.is_floating_point:
                p.data = p.data.to(half)


def dtype_report(model: Any, policy: PrecisionPolicy) -> dict[str, Any]:
    """Dtypes actually held by the model, weighted by element count, for the record."""
    frozen: Counter[str] = Counter()
    trainable: Counter[str] = Counter()
    for p in model.parameters():
        (trainable if p.requires_grad else frozen)[str(p.dtype).replace("torch.", "")] += p.numel()
    quant = None
    if policy.quantized:
        quant = sorted(
            {type(m).__name__ for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")}
        )
    return {
        "base_weight_dtype": frozen.most_common(1)[0][0] if frozen else None,
        "base_weight_dtypes": dict(frozen),
        "trainable_weight_dtype": trainable.most_common(1)[0][0] if trainable else None,
        "compute_dtype": policy.compute_dtype,
        "quantized_layers": quant,
        "emulated": policy.emulated,
    }


def keep_quantized_weights_trainable_on_cpu(model: Any) -> None:
    """bitsandbytes repacks 4-bit weights for fast CPU inference on the first eval-mode forward; training after
    that fails with an in-place error on the bias. Evaluation before training is part of every cell, so the
    repacking (an inference-only speed-up) is switched off for CPU cells."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@contextmanager
def input_casting_off(model: Any, half: bool) -> Any:
    """peft casts every adapter input to the adapter's fp32 dtype; under half-precision autocast (`half`) that is a
    wasted activation copy per adapted layer (the matmul runs in the autocast dtype anyway). Off for every layer that
    has the switch (peft's own helper fails on layers without it: IA3's)."""
    layers = [m for m in model.modules() if hasattr(m, "cast_input_dtype_enabled")] if half else []
    before = [m.cast_input_dtype_enabled for m in layers]
    for m in layers:
        m.cast_input_dtype_enabled = False
    try:
        yield
    finally:
        for m, value in zip(layers, before):
            m.cast_input_dtype_enabled = value
