"""NVML sampling in the parent: device used memory and the used memory of the child's whole process tree,
every ~10 ms, plus the energy counter. A fake backend stands in for tests and machines without a GPU."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil

FAKE_ENV = "PEFT_BENCH_FAKE_NVML"  # JSON: {"devices": [{"name", "used_mib", "processes": [{"pid", "used_mib"}]}],
#                                            "tree_mib": N (reported for every pid of the sampled tree)}


class Backend(Protocol):
    def device_count(self) -> int: ...
    def name(self, index: int) -> str: ...
    def driver(self) -> str | None: ...
    def used_mib(self, index: int) -> float: ...
    def processes(self, index: int) -> dict[int, float]: ...
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
        n = self.nv.nvmlDeviceGetName(self._h(index))
        return n.decode() if isinstance(n, bytes) else n

    def driver(self) -> str | None:
        d = self.nv.nvmlSystemGetDriverVersion()
        return d.decode() if isinstance(d, bytes) else d

    def used_mib(self, index: int) -> float:
        return self.nv.nvmlDeviceGetMemoryInfo(self._h(index)).used / 2**20

    def processes(self, index: int) -> dict[int, float]:
        procs = self.nv.nvmlDeviceGetComputeRunningProcesses(self._h(index))
        return {p.pid: (p.usedGpuMemory or 0) / 2**20 for p in procs}

    def energy_mj(self, index: int) -> float | None:
        try:
            return float(self.nv.nvmlDeviceGetTotalEnergyConsumption(self._h(index)))
        except self.nv.NVMLError:
            return None


class FakeNvml:
    """Deterministic stand-in: fixed devices and processes; `tree_mib` is reported for the sampled tree."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self.tree_pids: set[int] = set()

    def device_count(self) -> int:
        return len(self.config.get("devices", []))

    def _dev(self, index: int) -> dict[str, Any]:
        return self.config["devices"][index]

    def name(self, index: int) -> str:
        return self._dev(index).get("name", "FakeGPU")

    def driver(self) -> str | None:
        return self.config.get("driver", "fake")

    def used_mib(self, index: int) -> float:
        tree = self.config.get("tree_mib", 0) if self.tree_pids else 0
        return float(self._dev(index).get("used_mib", 0)) + tree

    def processes(self, index: int) -> dict[int, float]:
        procs = {int(p["pid"]): float(p["used_mib"]) for p in self._dev(index).get("processes", [])}
        for pid in self.tree_pids:
            procs[pid] = float(self.config.get("tree_mib", 0))
        return procs

    def energy_mj(self, index: int) -> float | None:
        return None


def open_backend() -> tuple[Backend | None, str | None]:
    """(backend, None) or (None, why NVML cannot be used here)."""
    fake = os.environ.get(FAKE_ENV)
    if fake:
        return FakeNvml(json.loads(fake)), None
    try:
        backend = RealNvml()
        if backend.device_count() == 0:
            return None, "NVML reports no GPU"
        return backend, None
    except Exception as exc:  # pynvml raises NVMLError_LibraryNotFound etc. without a driver
        return None, f"NVML unavailable: {type(exc).__name__}: {exc}".strip()


def busy_processes(backend: Backend, index: int, threshold_mib: float, exclude: set[int]) -> list[str]:
    """Processes already holding GPU memory, when together they exceed the threshold."""
    procs = {pid: mib for pid, mib in backend.processes(index).items() if pid not in exclude}
    if sum(procs.values()) <= threshold_mib:
        return []
    out = []
    for pid, mib in sorted(procs.items(), key=lambda kv: -kv[1]):
        try:
            name = " ".join(psutil.Process(pid).cmdline()[:3]) or psutil.Process(pid).name()
        except psutil.Error:
            name = "?"
        out.append(f"PID {pid} ({name}): {mib:.0f} MiB")
    return out


@dataclass
class NvmlPeaks:
    peak_nvml_mib: float | None = None  # device used memory, peak over the cell
    peak_nvml_process_mib: float | None = None  # summed over the child's process tree, peak
    baseline_nvml_mib: float | None = None  # device used memory before the cell started
    energy_j: float | None = None
    samples: int = 0
    missing_reason: dict[str, str] = field(default_factory=dict)


class Sampler:
    """Polls one device in a thread while a cell runs; `stop()` returns the peaks."""

    def __init__(self, backend: Backend | None, index: int, reason: str | None, interval_s: float = 0.01):
        self.backend, self.index, self.reason, self.interval_s = backend, index, reason, interval_s
        self.peaks = NvmlPeaks()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._energy0: float | None = None

    def start(self, pid: int) -> None:
        if self.backend is None:
            return
        self._pid = pid
        self.peaks.baseline_nvml_mib = self.backend.used_mib(self.index)
        self._energy0 = self.backend.energy_mj(self.index)
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
                if isinstance(self.backend, FakeNvml):
                    self.backend.tree_pids = tree
            self.sample(tree)
            n += 1
            self._stop.wait(self.interval_s)

    def sample(self, tree: set[int]) -> None:
        b, p = self.backend, self.peaks
        used = b.used_mib(self.index)
        procs = b.processes(self.index)
        mine = sum(mib for pid, mib in procs.items() if pid in tree)
        p.peak_nvml_mib = max(p.peak_nvml_mib or 0.0, used)
        p.peak_nvml_process_mib = max(p.peak_nvml_process_mib or 0.0, mine)
        p.samples += 1

    def stop(self) -> NvmlPeaks:
        if self.backend is None:
            reason = self.reason or "NVML unavailable"
            self.peaks.missing_reason = {
                k: reason for k in ("peak_nvml_mib", "peak_nvml_process_mib", "baseline_nvml_mib", "energy_j")
            }
            return self.peaks
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.sample(self._tree())
        energy1 = self.backend.energy_mj(self.index)
        if self._energy0 is not None and energy1 is not None:
            self.peaks.energy_j = (energy1 - self._energy0) / 1000
        else:
            self.peaks.missing_reason["energy_j"] = "GPU does not report a total energy counter"
        return self.peaks
