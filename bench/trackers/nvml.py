"""NVML in the supervising process: device used memory, the used memory of the cell's process tree and the
energy counter, sampled every ~10 ms into a timeline; after the cell, the timeline is attributed to the phases
the cell marked (bench/trackers/phases.py). A failing NVML call costs one sample (counted), never the record.

Backends: the real one (pynvml), or another class named by PEFT_BENCH_NVML_BACKEND=module:Class (tests use
this one injection point for their fake).
"""

from __future__ import annotations

import importlib
import math
import os
import threading
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

from bench.trackers import Measured
from bench.trackers.phases import Phase, inside

BACKEND_ENV = "PEFT_BENCH_NVML_BACKEND"


class Backend(Protocol):
    def device_count(self) -> int: ...
    def name(self, index: int) -> str: ...
    def uuid(self, index: int) -> str: ...
    def driver(self) -> str | None: ...
    def used_mib(self, index: int) -> float: ...
    def total_mib(self, index: int) -> float: ...
    def processes(self, index: int) -> dict[int, float | None]: ...  # None: the driver gives no figure
    def energy_mj(self, index: int) -> float | None: ...


class RealNvml:
    def __init__(self) -> None:
        import pynvml

        pynvml.nvmlInit()
        self.nv = pynvml

    def device_count(self) -> int:
        return self.nv.nvmlDeviceGetCount()

    def _h(self, index: int) -> Any:
        return self.nv.nvmlDeviceGetHandleByIndex(index)

    def name(self, index: int) -> str:
        return _text(self.nv.nvmlDeviceGetName(self._h(index)))

    def uuid(self, index: int) -> str:
        return _text(self.nv.nvmlDeviceGetUUID(self._h(index)))

    def driver(self) -> str | None:
        return _text(self.nv.nvmlSystemGetDriverVersion())

    def mig_parent_index(self, uuid: str) -> int:
        mig = self.nv.nvmlDeviceGetHandleByUUID(uuid)
        return self.nv.nvmlDeviceGetIndex(self.nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig))

    def used_mib(self, index: int) -> float:
        return self.nv.nvmlDeviceGetMemoryInfo(self._h(index)).used / 2**20

    def total_mib(self, index: int) -> float:
        return self.nv.nvmlDeviceGetMemoryInfo(self._h(index)).total / 2**20

    def processes(self, index: int) -> dict[int, float | None]:
        """PID -> MiB; None where the driver reports no per-process figure (MIG, some drivers): unknown, not 0."""
        procs = self.nv.nvmlDeviceGetComputeRunningProcesses(self._h(index))
        return {p.pid: None if p.usedGpuMemory is None else p.usedGpuMemory / 2**20 for p in procs}

    def energy_mj(self, index: int) -> float | None:
        try:
            return float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self._h(index)))
        except self.nv.NVMLError_NotSupported:
            return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else value


def open_backend() -> tuple[Backend | None, str | None]:
    """(backend, None) or (None, why NVML cannot be used here)."""
    target = os.environ.get(BACKEND_ENV)
    try:
        if target:
            module, _, attr = target.partition(":")
            backend = getattr(importlib.import_module(module), attr)()
        else:
            backend = RealNvml()
        if backend.device_count() == 0:
            return None, "NVML reports no GPU"
        return backend, None
    except Exception as exc:  # pynvml raises NVMLError_LibraryNotFound etc. without a driver
        return None, f"NVML unavailable: {type(exc).__name__}: {exc}".strip()


def busy_processes(backend: Backend, index: int, threshold_mib: float, exclude: set[int]) -> list[str]:
    """Processes already holding GPU memory, when together they exceed the threshold."""
    procs = {pid: mib for pid, mib in backend.processes(index).items() if pid not in exclude}
    if sum(mib or 0 for mib in procs.values()) <= threshold_mib:  # unknown figures: the device check catches them
        return []
    ordered = sorted(procs.items(), key=lambda kv: -(kv[1] or 0))
    return [f"PID {pid} ({_process_name(pid)}): {'?' if mib is None else f'{mib:.0f}'} MiB" for pid, mib in ordered]


def _process_name(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return " ".join(p.cmdline()[:3]) or p.name()
    except psutil.Error:
        return "?"


@dataclass
class Timeline:
    """Samples of one cell: unix time, device used MiB, the cell tree's MiB (nan: no process of the tree listed, or
    listed without a figure), energy counter mJ (nan: none)."""

    t: array = field(default_factory=lambda: array("d"))
    used: array = field(default_factory=lambda: array("d"))
    tree: array = field(default_factory=lambda: array("d"))
    energy: array = field(default_factory=lambda: array("d"))
    errors: int = 0
    last_error: str | None = None
    unreported: int = 0  # samples where a process of the tree was listed with no memory figure (None)

    def add(self, t: float, used: float, tree: float, energy: float | None) -> None:
        self.t.append(t)
        self.used.append(used)
        self.tree.append(tree)
        self.energy.append(math.nan if energy is None else energy)

    def window(self, start: float, end: float, pauses: Any = ()) -> dict[str, float | None]:
        """Peaks and energy between two unix times (energy interpolated at the edges), leaving out pauses."""
        span = {"start_unix": start, "end_unix": end, "pauses": pauses}
        idx = [i for i, t in enumerate(self.t) if inside(t, span)]
        energy = self._energy_between(start, end)
        for t0, t1 in pauses:
            paused = self._energy_between(t0, t1)
            energy = None if energy is None or paused is None else energy - paused
        return {
            "peak_nvml_mib": max((self.used[i] for i in idx), default=None),
            "peak_nvml_process_mib": max((self.tree[i] for i in idx if not math.isnan(self.tree[i])), default=None),
            "energy_j": energy,
        }

    def _energy_between(self, start: float, end: float) -> float | None:
        pts = [(t, e) for t, e in zip(self.t, self.energy) if not math.isnan(e)]
        if len(pts) < 2 or start < pts[0][0] - 1e-3 or end > pts[-1][0] + 1e-3:
            return None
        return (_interp(pts, end) - _interp(pts, start)) / 1000


def _interp(pts: list[tuple[float, float]], t: float) -> float:
    if t <= pts[0][0]:
        return pts[0][1]
    for (t0, e0), (t1, e1) in zip(pts, pts[1:]):
        if t0 <= t <= t1:
            return e0 if t1 == t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)
    return pts[-1][1]


class Sampler:
    """Polls one device in a thread while a cell runs; `stop()` returns the timeline."""

    def __init__(self, backend: Backend | None, index: int, interval_s: float = 0.01):
        self.backend, self.index, self.interval_s = backend, index, interval_s
        self.timeline = Timeline()
        self.baseline_mib: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None

    def take_baseline(self) -> None:
        """Device memory before the cell starts: what other processes hold."""
        if self.backend is None:
            return
        try:
            self.baseline_mib = self.backend.used_mib(self.index)
        except Exception as exc:  # counted like a failed sample
            self.timeline.errors += 1
            self.timeline.last_error = f"{type(exc).__name__}: {exc}"

    def start(self, pid: int) -> None:
        if self.backend is None:
            return
        self._pid = pid
        self.sample(self._tree())
        self._thread = threading.Thread(target=self._loop, daemon=True, name="nvml-sampler")
        self._thread.start()

    def _tree(self) -> set[int]:
        try:
            root = psutil.Process(self._pid)
            return {self._pid, *(c.pid for c in root.children(recursive=True))}
        except psutil.Error:
            return set()

    def _loop(self) -> None:
        tree: set[int] = set()
        n = 0
        while not self._stop.is_set():
            if n % 10 == 0:  # the tree changes rarely; walking /proc every sample would cost more than NVML
                tree = self._tree() or tree
            self.sample(tree)
            n += 1
            self._stop.wait(self.interval_s)

    def sample(self, tree: set[int]) -> None:
        b, tl = self.backend, self.timeline
        try:
            used = b.used_mib(self.index)
            procs = b.processes(self.index)
            energy = b.energy_mj(self.index)
        except Exception as exc:  # driver hiccup, XID, GPU off the bus: lose this sample, keep going
            tl.errors += 1
            tl.last_error = f"{type(exc).__name__}: {exc}"
            return
        mine = [mib for pid, mib in procs.items() if pid in tree]
        if any(mib is None for mib in mine):
            tl.unreported += 1
        tree_mib = math.nan if not mine or any(mib is None for mib in mine) else sum(mine)
        tl.add(time.time(), used, tree_mib, energy)

    def stop(self) -> Timeline:
        if self.backend is None:
            return self.timeline
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.sample(self._tree())
        return self.timeline


NVML_METRICS = ("peak_nvml_mib", "peak_nvml_process_mib", "baseline_nvml_mib", "energy_j")
TRAIN_METRICS = ("train_peak_nvml_mib", "train_peak_nvml_process_mib", "train_energy_j", "energy_per_token_j")
FALLBACK = "train_peak_nvml_device_minus_baseline_mib"  # the headline when the process tree's memory is unknown
PROCESS_METRICS = ("peak_nvml_process_mib", "train_peak_nvml_process_mib")


def attribute(
    sampler: Sampler, phases: dict[str, dict[str, Any]], timed_tokens: int | None, reason: str | None
) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, Any]]]:
    """(metrics, missing reasons, per-phase figures) from a cell's timeline and its phase marks."""
    tl = sampler.timeline
    if sampler.backend is None:
        why = reason or "NVML unavailable"
        keys = (*NVML_METRICS, *TRAIN_METRICS, FALLBACK)
        return {k: None for k in keys}, {k: why for k in keys}, {}
    metrics: dict[str, Any] = {
        "nvml_samples": len(tl.t),
        "nvml_errors": tl.errors,
        "baseline_nvml_mib": sampler.baseline_mib,
    }
    missing: dict[str, str] = {}
    if tl.t:
        whole = tl.window(tl.t[0], tl.t[-1])
        metrics.update(whole)
    per_phase = {}
    for name, span in phases.items():
        if span.get("start_unix") is not None and span.get("end_unix") is not None:
            per_phase[name] = tl.window(span["start_unix"], span["end_unix"], span.get("pauses", ()))
    train, timed = per_phase.get(Phase.TRAIN, {}), per_phase.get(Phase.TRAIN_TIMED, {})
    metrics["train_peak_nvml_mib"] = train.get("peak_nvml_mib")
    metrics["train_peak_nvml_process_mib"] = train.get("peak_nvml_process_mib")
    metrics["train_energy_j"] = timed.get("energy_j")
    if metrics["train_energy_j"] is not None and timed_tokens:
        metrics["energy_per_token_j"] = metrics["train_energy_j"] / timed_tokens
    _fallback(metrics, missing, sampler)
    for key in (*NVML_METRICS, *TRAIN_METRICS):
        if metrics.get(key) is None:
            metrics[key] = None
            missing[key] = _why_missing(key, tl, phases)
    return metrics, missing, per_phase


def _fallback(metrics: dict[str, Any], missing: dict[str, str], sampler: Sampler) -> None:
    """Where NVML cannot attribute memory to the cell's processes, the device's training peak minus what the device
    held just before the cell: a labelled stand-in for the headline, never a 0."""
    if metrics.get("train_peak_nvml_process_mib") is not None:
        return  # known: no stand-in
    if metrics.get("train_peak_nvml_mib") is not None and sampler.baseline_mib is not None:
        metrics[FALLBACK] = metrics["train_peak_nvml_mib"] - sampler.baseline_mib
        return
    why = "no device baseline was read before the cell" if metrics.get("train_peak_nvml_mib") is not None else ""
    metrics[FALLBACK], missing[FALLBACK] = None, why or "no device figure in the training phase"


def _why_missing(key: str, tl: Timeline, phases: dict[str, Any]) -> str:
    errors = f"; {tl.errors} NVML errors, last: {tl.last_error}" if tl.errors else ""
    if not tl.t:
        return f"no NVML sample succeeded{errors}"
    if key in PROCESS_METRICS and tl.unreported:
        return (
            "the driver lists the cell's processes without a memory figure (usedGpuMemory is None: MIG or this driver)"
        )
    if key in PROCESS_METRICS and all(math.isnan(v) for v in tl.tree):
        return (
            "no PID of the cell's process tree is in NVML's process list (a container without the host PID "
            f"namespace?); see {FALLBACK}"
        )
    if "energy" in key and all(math.isnan(e) for e in tl.energy):
        return "GPU does not report a total energy counter"
    if key.startswith("train") or key == "energy_per_token_j":
        wanted = Phase.TRAIN_TIMED if "energy" in key else Phase.TRAIN
        if wanted not in phases:
            return f"the cell did not reach its {wanted} phase"
        return f"no NVML sample inside the {wanted} phase (shorter than the sampling interval?){errors}"
    return f"not measured{errors}"


class NvmlTracker:
    """The cell's GPU: device and process-tree memory and the energy counter, attributed to its phases; every
    figure null with the reason where NVML cannot be used (no GPU, no driver)."""

    def __init__(self, backend: Backend | None, index: int, interval_s: float, reason: str | None):
        self.sampler = Sampler(backend, index, interval_s)
        self.reason = reason
        self.sampler.take_baseline()  # before the cell starts: what other processes hold

    def start(self, pid: int) -> None:
        self.sampler.start(pid)

    def stop(self) -> None:
        self.sampler.stop()

    def attribute(self, phases: dict[str, dict[str, Any]], timed_tokens: int | None) -> Measured:
        metrics, missing, per_phase = attribute(self.sampler, phases, timed_tokens, self.reason)
        tl = self.sampler.timeline
        notes = [f"{tl.errors} NVML samples failed (last: {tl.last_error})"] if tl.errors else []
        return Measured(metrics, missing, per_phase, notes)
