"""What the CPU computes natively: bf16/fp16 matrix instructions (AVX512-BF16, AMX, AVX512-FP16) from the
kernel's cpuinfo flags and torch's own checks, limited by ONEDNN_MAX_CPU_ISA when the user set it.

Without native bf16, oneDNN emulates bf16 matmuls through fp32 conversions: measured 17x slower than fp32 on an
AVX2-only AMD EPYC (40 vs 706 tokens/s). A bf16 label there measures the emulation, not the method.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_fp16", "avx_vnni")
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
FP16_FLAGS = ("avx512_fp16", "amx_fp16")
# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) under which bf16 / fp16 matmuls are native.
BF16_ISAS = ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512", "AVX10_1_512_AMX", "ALL")
FP16_ISAS = ("AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16", "AVX10_1_512", "ALL")
EMULATED_SLOWDOWN = "measured 17x slower than fp32 on an AVX2-only AMD EPYC"


@dataclass(frozen=True)
class CpuFacts:
    model: str
    capability: str  # torch's ATen kernel level, e.g. AVX2 / AVX512
    flags: tuple[str, ...]  # FLAGS_OF_INTEREST the kernel reports
    onednn_max_isa: str | None
    native_bf16: bool
    native_fp16: bool

    def as_env(self) -> dict[str, object]:
        return {
            "cpu_model": self.model,
            "cpu_capability": self.capability,
            "cpu_flags": list(self.flags),
            "cpu_native_bf16": self.native_bf16,
            "cpu_native_fp16": self.native_fp16,
            "onednn_max_cpu_isa": self.onednn_max_isa,
        }

    def missing_bf16(self) -> str:
        """Why bf16 is not native here, naming the missing instruction sets."""
        limit = f" (ONEDNN_MAX_CPU_ISA={self.onednn_max_isa})" if self.onednn_max_isa else ""
        return (
            f"this CPU ({self.model}; torch capability {self.capability}{limit}) has no native bf16 "
            f"(needs AVX512-BF16 or AMX-BF16): bf16 would be emulated, {EMULATED_SLOWDOWN}"
        )


def _cpuinfo_text() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _field(text: str, name: str) -> str | None:
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


@cache
def facts() -> CpuFacts:
    """This machine's CPU facts (cached per process)."""
    import torch

    text = _cpuinfo_text()
    kernel_flags = set((_field(text, "flags") or "").split())
    flags = tuple(f for f in FLAGS_OF_INTEREST if f in kernel_flags)
    torch_bf16 = bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() or None
    bf16 = torch_bf16 and any(f in flags for f in BF16_FLAGS) and (isa is None or isa in BF16_ISAS)
    fp16 = any(f in flags for f in FP16_FLAGS) and (isa is None or isa in FP16_ISAS)
    return CpuFacts(
        model=_field(text, "model name") or platform.processor() or platform.machine(),
        capability=torch.backends.cpu.get_cpu_capability(),
        flags=flags,
        onednn_max_isa=isa,
        native_bf16=bf16,
        native_fp16=fp16,
    )
