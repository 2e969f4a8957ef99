"""Environment facts for a record: package versions (read without importing), device, git sha, host."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "evaluate", "peft-bench")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_sha() -> str | None:
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        )
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def node_name() -> str:
    """This node's name: Slurm's where a job runs (two slurmds on one host differ there), else the hostname."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def base_env() -> dict[str, Any]:
    """Facts the parent can know without importing torch."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "git_sha": git_sha(),
        "packages": package_versions(),
    }


def device_env(device: str) -> dict[str, Any]:
    """Facts only the child knows once torch is imported."""
    import torch

    from bench.env.cpu import facts

    env: dict[str, Any] = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER"),
        "cuda_alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF"),
        "cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(),
        **facts().as_env(),
    }
    if device == "cuda":
        env["gpu_name"] = torch.cuda.get_device_name()
        env["gpu_capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
        env["gpu_memory_mib"] = torch.cuda.get_device_properties(0).total_memory // 2**20
    else:
        env["gpu_name"] = None
    return env


# Dense peaks (FLOP/s, no sparsity) from the vendors' data sheets, matched on the NVML/torch name.
# bf16 (= fp16 on these parts) on tensor cores; fp32 on CUDA cores (torch leaves TF32 matmuls off by default).
BF16_PEAK_FLOPS = {
    "H200": 989.4e12,
    "H100 SXM": 989.4e12,
    "H100 80GB HBM3": 989.4e12,
    "H100 NVL": 835e12,
    "H100 PCIe": 756e12,
    "GH200": 989.4e12,
    "A100": 312e12,
    "L40S": 362.05e12,
    "L40": 181.05e12,
    "L4": 121e12,
    "A10G": 70e12,
    "A10": 125e12,
    "RTX 4090": 165.2e12,
    "RTX 3090": 71e12,
    "B200": 2250e12,
}


FP32_PEAK_FLOPS = {
    "H200": 66.9e12,
    "H100 SXM": 66.9e12,
    "H100 80GB HBM3": 66.9e12,
    "H100 NVL": 60e12,
    "H100 PCIe": 51.2e12,
    "GH200": 66.9e12,
    "A100": 19.5e12,
    "L40S": 91.6e12,
    "L40": 90.5e12,
    "L4": 30.3e12,
    "A10G": 31.2e12,
    "A10": 31.2e12,
    "RTX 4090": 82.6e12,
    "RTX 3090": 35.6e12,
    "B200": 80e12,
}


def _lookup(table: dict[str, float], gpu_name: str | None) -> float | None:
    """The table entry whose key occurs in the GPU name (longest match wins), else None."""
    if not gpu_name:
        return None
    hits = [k for k in table if k in gpu_name]
    return table[max(hits, key=len)] if hits else None


def bf16_peak_flops(gpu_name: str | None) -> float | None:
    return _lookup(BF16_PEAK_FLOPS, gpu_name)


def peak_flops(gpu_name: str | None, compute_dtype: str) -> float | None:
    """Dense peak of the GPU for the dtype the cell computes in (bfloat16 / float16 / float32)."""
    return _lookup(FP32_PEAK_FLOPS if compute_dtype == "float32" else BF16_PEAK_FLOPS, gpu_name)
