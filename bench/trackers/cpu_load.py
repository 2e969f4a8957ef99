"""How busy the machine was while the cell's timed steps ran, seen by the supervisor: the CPU share other processes
took (everything busy on the machine minus the cell's own process tree; the supervisor counts as other), the load
average, and, with the cell's step-time spread, a `noisy` verdict. A timing taken next to another job is marked,
not silently published; `compare` leaves noisy cells' speed out."""

from __future__ import annotations

import os
import threading
import time
from array import array

import psutil

from bench.trackers import Measured, Spans
from bench.trackers.phases import Phase

NOISY_OTHER_SHARE = 0.15  # other processes used more than 15% of the machine's cores during the timed steps
NOISY_SPREAD = 1.5  # step time p90 / p50 above this (with at least MIN_STEPS timed steps)
MIN_STEPS = 5
KEYS = ("other_cpu_share", "load_avg_1m")


def _busy_s() -> float:
    """CPU seconds the whole machine has spent not idle (steal included: a neighbour VM took it)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


class CpuLoadTracker:
    def __init__(self, interval_s: float = 0.2):
        self.interval_s = interval_s
        self.t, self.busy, self.tree = array("d"), array("d"), array("d")
        self.load_1m: float | None = None
        self.cores = psutil.cpu_count() or 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._procs: dict[int, psutil.Process] = {}
        self._gone_s = 0.0  # CPU time of tree processes that exited (kept so the counter never goes back)

    def start(self, pid: int) -> None:
        self._root = pid
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cpu-load")
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _tree_s(self) -> float:
        try:
            root = self._procs.setdefault(self._root, psutil.Process(self._root))
            for child in root.children(recursive=True):
                self._procs.setdefault(child.pid, child)
        except psutil.Error:
            pass
        total = 0.0
        for pid, proc in list(self._procs.items()):
            try:
                times = proc.cpu_times()
                total += times.user + times.system
                proc.last_cpu = times.user + times.system  # type: ignore[attr-defined]
            except psutil.Error:
                self._gone_s += getattr(proc, "last_cpu", 0.0)
                del self._procs[pid]
        return total + self._gone_s

    def _sample(self) -> None:
        try:
            busy, tree = _busy_s(), self._tree_s()
        except Exception:  # noqa: BLE001 - a failed sample costs one point, never the record
            return
        self.t.append(time.time())
        self.busy.append(busy)
        self.tree.append(tree)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self._sample()
        self.load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def attribute(self, phases: Spans, timed_tokens: int | None) -> Measured:
        span = phases.get(Phase.TRAIN_TIMED) or {}
        start, end = span.get("start_unix"), span.get("end_unix")
        metrics = {"load_avg_1m": self.load_1m}
        missing = {} if self.load_1m is not None else {"load_avg_1m": "no load average on this platform"}
        if start is None or end is None or len(self.t) < 2:
            metrics["other_cpu_share"], missing["other_cpu_share"] = None, "no timed steps to measure the load over"
            return Measured(metrics, missing)
        lo = max([i for i, t in enumerate(self.t) if t <= start], default=0)
        hi = min([i for i, t in enumerate(self.t) if t >= end], default=len(self.t) - 1)
        wall = self.t[hi] - self.t[lo]
        if hi <= lo or wall <= 0:
            metrics["other_cpu_share"], missing["other_cpu_share"] = None, "no two load samples around the timed steps"
            return Measured(metrics, missing)
        other = (self.busy[hi] - self.busy[lo]) - (self.tree[hi] - self.tree[lo])
        metrics["other_cpu_share"] = max(0.0, other) / (wall * self.cores)
        return Measured(metrics, missing)


def noise_verdict(metrics: dict) -> tuple[bool | None, str]:
    """(noisy, why) from the machine's load and the cell's step-time spread: (True, the figures), (False, ""), or
    (None, why it could not be judged)."""
    share, spread = metrics.get("other_cpu_share"), metrics.get("step_time_spread")
    if share is None and spread is None:
        return None, "neither the machine's load nor a step-time spread was measured"
    why = []
    if share is not None and share > NOISY_OTHER_SHARE:
        why.append(f"other processes used {100 * share:.0f}% of the machine's CPU during the timed steps")
    if spread is not None and (metrics.get("timed_steps") or 0) >= MIN_STEPS and spread > NOISY_SPREAD:
        why.append(f"step time p90/p50 = {spread:.2f}")
    if not why:
        return False, ""
    load = metrics.get("load_avg_1m")
    load_text = f", load average {load:.1f} on {psutil.cpu_count()} cores" if load is not None else ""
    return True, f"noisy timing: {'; '.join(why)}{load_text}: its speed figures are not comparable"
