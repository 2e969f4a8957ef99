"""What a `peft-bench fit` probe changes in a cell: a memory limit counted from the state training starts in (so the
search can run on a CPU, and on a GPU below the card's size), and no evaluation after training (a probe asks only
whether training fits).

On a GPU the limit is torch's per-process memory fraction of the card: an allocation past it fails in torch's
allocator (weights included). On a CPU it is checked against the kernel's own peak count: the cell's peak resident
memory (ru_maxrss) during training minus its resident memory when training started, over the limit, is an
out-of-memory verdict naming both figures. (An address-space or data-segment limit the cell sets on itself was
tried: glibc reserves 64 MiB of address space per thread arena, so where the boundary fell moved from cell to cell,
and libraries loaded later failed to map or spun instead of failing.)"""

from __future__ import annotations

import resource
from typing import Any

import psutil

PROBE_REASON = "a fit probe: it only trains (peft-bench fit)"


class CpuOutOfMemoryError(RuntimeError):
    """A CPU cell's training needed more memory than its limit (classified `oom`)."""


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def apply_memory_limit(limit_mib: float, device: str) -> dict[str, Any]:
    """Set (GPU) or start watching (CPU) the limit; returns what the record keeps of it."""
    if device == "cuda":
        import torch

        total = torch.cuda.get_device_properties(0).total_memory
        fraction = min(1.0, limit_mib * 2**20 / total)
        torch.cuda.set_per_process_memory_fraction(fraction)
        return {"memory_limit_mib": limit_mib, "cuda_memory_fraction": fraction}
    rss = psutil.Process().memory_info().rss / 2**20
    return {"memory_limit_mib": limit_mib, "rss_at_train_start_mib": rss, "maxrss_at_train_start_mib": _maxrss_mib()}


def check_memory_limit(limit: dict[str, Any] | None) -> dict[str, Any]:
    """After training on a CPU: the peak growth, or CpuOutOfMemoryError when it is over the limit."""
    if not limit or "rss_at_train_start_mib" not in limit:
        return {}
    peak = _maxrss_mib()
    if peak <= limit["maxrss_at_train_start_mib"]:  # training never went above an earlier peak
        growth = max(0.0, limit["maxrss_at_train_start_mib"] - limit["rss_at_train_start_mib"])
    else:
        growth = peak - limit["rss_at_train_start_mib"]
    if growth > limit["memory_limit_mib"]:
        start, cap = limit["rss_at_train_start_mib"], limit["memory_limit_mib"]
        raise CpuOutOfMemoryError(
            f"training needed {growth:,.0f} MiB beyond its start (peak RSS {peak:,.0f} MiB, {start:,.0f} MiB at the "
            f"start), over --memory-limit-mib {cap:g}"
        )
    return {"train_peak_growth_mib": growth}


def skip_eval_after(c: Any) -> None:
    c.set_missing(["score_after", "general_loss_after", "forgetting_delta"], PROBE_REASON)
