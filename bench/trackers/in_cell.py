"""Trackers that run inside the cell process (what only the cell can see), with the same `start / stop /
attribute(phases) -> Measured` shape as the supervisor's: torch's allocator peaks over the training phase, and the
cell process's lifetime resident peak (ru_maxrss)."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.trackers import Measured, Spans

ALLOCATOR_KEYS = ("torch_peak_allocated_mib", "torch_peak_reserved_mib")


class TorchAllocatorTracker:
    """torch.cuda max allocated / reserved between start (cache emptied, peaks reset: eval's blocks are not the
    training peak) and stop; null with the reason without CUDA."""

    def __init__(self, device: str):
        self.device = device
        self.peaks: dict[str, float] = {}
        self._before_pause = (0.0, 0.0)  # peaks (allocated, reserved) MiB before the last pause

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
            "torch_peak_allocated_mib": max(torch.cuda.max_memory_allocated() / 2**20, self._before_pause[0]),
            "torch_peak_reserved_mib": max(torch.cuda.max_memory_reserved() / 2**20, self._before_pause[1]),
        }

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work mid-phase that is not training (a score-curve evaluation): the peaks so far are kept, and torch's
        peak counters restart after it, so its allocations are not the training peak."""
        if self.device != "cuda":
            yield
            return
        import torch

        torch.cuda.synchronize()
        mib = (torch.cuda.max_memory_allocated() / 2**20, torch.cuda.max_memory_reserved() / 2**20)
        self._before_pause = (max(mib[0], self._before_pause[0]), max(mib[1], self._before_pause[1]))
        try:
            yield
        finally:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

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
