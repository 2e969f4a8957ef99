"""What the supervisor and the cell measure over a cell's phases. Each tracker owns one quantity:

    tracker = NvmlTracker(...) | RssTracker() | TorchAllocatorTracker(device) | ...
    tracker.start(pid)                      # the process (tree) it watches
    ...                                     # the cell runs
    tracker.stop()
    measured = tracker.attribute(phases, timed_tokens)   # figures over the phases the cell marked

`Measured` is plain data: metrics, the reasons of the null ones, per-phase figures and notes. The supervisor
loops over its trackers and merges what they measured (bench/execution/supervise.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

Spans = dict[str, dict[str, float]]  # phase -> {start_unix, end_unix, ...}


@dataclass
class Measured:
    metrics: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # metric -> why it is null
    per_phase: dict[str, dict[str, Any]] = field(default_factory=dict)  # phase -> figures
    notes: list[str] = field(default_factory=list)
    per_gpu: list[dict[str, Any]] | None = None  # a multi-GPU cell: each GPU's own figures (rank i on GPU i)

    def merge(self, other: Measured) -> Measured:
        self.per_gpu = other.per_gpu if other.per_gpu is not None else self.per_gpu
        self.metrics.update(other.metrics)
        self.missing.update(other.missing)
        for phase, figures in other.per_phase.items():
            self.per_phase.setdefault(phase, {}).update(figures)
        self.notes += other.notes
        return self


class Tracker(Protocol):
    def start(self, pid: int) -> None: ...
    def stop(self) -> None: ...
    def attribute(self, phases: Spans, timed_tokens: int | None) -> Measured: ...
