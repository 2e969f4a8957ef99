"""Resident memory of a cell's process tree, sampled by the supervisor every ~20 ms (CPU cells' memory figures;
on GPU cells the host side). Attributed to the cell's phases like the NVML timeline."""

from __future__ import annotations

import threading
import time
from array import array
from typing import Any

import psutil

from bench.trackers import Measured
from bench.trackers.phases import Phase, inside

MIB = 2**20


class RssSampler:
    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.t, self.rss = array("d"), array("d")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}

    def start(self, pid: int) -> None:
        self._root = pid
        self._thread = threading.Thread(target=self._loop, daemon=True, name="rss-sampler")
        self._thread.start()

    def _refresh(self) -> None:
        try:
            root = psutil.Process(self._root)
            for p in [root, *root.children(recursive=True)]:
                self._procs.setdefault(p.pid, p)
        except psutil.Error:
            pass

    def _loop(self) -> None:
        n = 0
        while not self._stop.is_set():
            if n % 10 == 0:
                self._refresh()
            total = 0
            for pid, p in list(self._procs.items()):
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    self._procs.pop(pid, None)
            if total:
                self.t.append(time.time())
                self.rss.append(total / MIB)
            n += 1
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def window_peak(self, start: float, end: float, pauses: Any = ()) -> float | None:
        span = {"start_unix": start, "end_unix": end, "pauses": pauses}
        return max((r for t, r in zip(self.t, self.rss) if inside(t, span)), default=None)

    def at(self, when: float) -> float | None:
        """The last sample at or before `when`."""
        before = [r for t, r in zip(self.t, self.rss) if t <= when]
        return before[-1] if before else None


def attribute(sampler: RssSampler, phases: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str], dict]:
    """(metrics, missing reasons, per-phase peaks) of the tree's RSS."""
    per_phase = {
        name: {"peak_rss_tree_mib": sampler.window_peak(s["start_unix"], s["end_unix"], s.get("pauses", ()))}
        for name, s in phases.items()
        if s.get("start_unix") is not None and s.get("end_unix") is not None
    }
    train = phases.get(Phase.TRAIN) or {}
    metrics: dict[str, Any] = {
        "peak_rss_tree_mib": max(sampler.rss, default=None),
        "train_peak_rss_mib": (per_phase.get(Phase.TRAIN) or {}).get("peak_rss_tree_mib"),
        "rss_at_train_start_mib": sampler.at(train["start_unix"]) if train.get("start_unix") else None,
    }
    if metrics["train_peak_rss_mib"] is not None and metrics["rss_at_train_start_mib"] is not None:
        metrics["train_rss_growth_mib"] = metrics["train_peak_rss_mib"] - metrics["rss_at_train_start_mib"]
    else:
        metrics["train_rss_growth_mib"] = None
    missing = {
        k: "no RSS sample inside the training phase (cell ended before it?)" for k, v in metrics.items() if v is None
    }
    return metrics, missing, per_phase


class RssTracker:
    """Resident memory of the cell's process tree (CPU cells' headline memory; the host side of GPU cells)."""

    def __init__(self, interval_s: float = 0.02):
        self.sampler = RssSampler(interval_s)

    def start(self, pid: int) -> None:
        self.sampler.start(pid)

    def stop(self) -> None:
        self.sampler.stop()

    def attribute(self, phases: dict[str, dict[str, Any]], timed_tokens: int | None) -> Measured:
        return Measured(*attribute(self.sampler, phases))
