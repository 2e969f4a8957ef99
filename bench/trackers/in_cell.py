"""Trackers that run inside the cell process (what only the cell can see), with the same `start / stop /
attribute(phases) -> Measured` shape as the supervisor's: torch's allocator peaks over the training phase, and the
cell process's lifetime resident peak (ru_maxrss)."""

from __future__ import annotations

import resource
from typing import Any

from bench.trackers import Measured, Spans

ALLOCATOR_KEYS = ("torch_peak_allocated_mib", "torch_peak_reserved_mib")


class TorchAllocatorTracker:
    """torch.cuda max allocated / reserved between start (cache emptied, peaks reset: eval's blocks are not the
    training peak) and stop; null with the reason without CUDA."""

    def __init__(self, device: str):
        self.device = device
        self.peaks: dict[str, float] = {}

    def start(self, pid: int | None = None) -> None:
        if self.device != "cuda":
            return
        import torch

        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()

    def stop(self) -> None:
        if self.device != "cuda":
            return
        import torch

        torch.cuda.synchronize()
        self.peaks = {
            "torch_peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
            "torch_peak_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
        }

    def attribute(self, phases: Spans | None = None, timed_tokens: int | None = None) -> Measured:
        if self.device != "cuda":
            why = "no CUDA device: torch allocator peaks exist only on GPU"
            return Measured({k: None for k in ALLOCATOR_KEYS}, {k: why for k in ALLOCATOR_KEYS})
        return Measured(dict(self.peaks))


class MaxRssTracker:
    """The cell process's own resident peak over its life (the kernel's count; children not included)."""

    def start(self, pid: Any = None) -> None:
        pass

    def stop(self) -> None:
        self.peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def attribute(self, phases: Spans | None = None, timed_tokens: int | None = None) -> Measured:
        return Measured({"peak_rss_mib": self.peak_mib})
