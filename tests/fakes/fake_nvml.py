"""A deterministic NVML backend for tests, reached through the one injection point PEFT_BENCH_NVML_BACKEND.

Config (JSON) from PEFT_BENCH_FAKE_NVML, or re-read from the file PEFT_BENCH_FAKE_NVML_FILE on every call (tests
change it while a suite runs):
  {"devices": [{"name", "uuid", "used_mib", "processes": [{"pid", "used_mib"}]}],
   "tree_mib": N,        reported for every running cell process and added to used_mib (a device's own
                         "tree_mib" overrides it for that device)
   "node_tree_mib": {"K": N},  overrides both in a Slurm task of node K (PEFT_BENCH_NODE_RANK: a cell over nodes)
   "tree_report": "none" (cell processes listed with usedGpuMemory None) | "hidden" (not listed: another PID
                  namespace); device memory still rises by tree_mib
   "fail_from_call": K,  every used_mib call from the K-th on raises (a GPU fallen off the bus)
   "fail_every": K}      every K-th used_mib call raises (a driver hiccup)
"""

from __future__ import annotations

import json
import os
from typing import Any

import psutil

CONFIG_ENV = "PEFT_BENCH_FAKE_NVML"
FILE_ENV = "PEFT_BENCH_FAKE_NVML_FILE"


class FakeNvmlError(RuntimeError):
    pass


class FakeNvml:
    def __init__(self) -> None:
        self.calls = 0
        self._seen: tuple[float, list[int]] = (0.0, [])  # the last scan for cell processes and when it ran
        self._local_rank: dict[int, str | None] = {}

    @property
    def config(self) -> dict[str, Any]:
        path = os.environ.get(FILE_ENV)
        if path:
            with open(path) as fh:
                return json.load(fh)
        return json.loads(os.environ.get(CONFIG_ENV, "{}"))

    def device_count(self) -> int:
        return len(self.config.get("devices", []))

    def _dev(self, index: int) -> dict[str, Any]:
        return self.config["devices"][index]

    def name(self, index: int) -> str:
        return self._dev(index).get("name", f"FakeGPU{index}")

    def uuid(self, index: int) -> str:
        return self._dev(index).get("uuid", f"GPU-fake-{index}")

    def driver(self) -> str | None:
        return self.config.get("driver", "fake")

    def _cells(self) -> list[int]:
        """Running cell processes of this runner: spawned ones (`-m bench.cell`) and fork-server children (a scan of
        the process tree at most every 50 ms: the samplers ask 100 times a second per GPU)."""
        import time

        if time.monotonic() - self._seen[0] < 0.05:  # new processes wait for the next scan; ended ones do not stay
            return [pid for pid in self._seen[1] if _alive(pid)]
        out = self._scan()
        self._seen = (time.monotonic(), out)
        return out

    def _scan(self) -> list[int]:
        out = []
        for p in psutil.Process(os.getpid()).children(recursive=True):
            try:
                cmd = " ".join(p.cmdline())
                parent = " ".join(p.parent().cmdline()) if p.parent() else ""
                if "bench.cell" in cmd or ("forkserver" in parent and "forkserver" in cmd):
                    out.append(p.pid)
            except psutil.Error:
                continue
        return out

    def _on_device(self, index: int) -> list[int]:
        """Cell processes with a context on this GPU: a torchrun rank (LOCAL_RANK k) on the k-th only, its agent on
        none; a one-process cell on every device it can see."""
        cells, ranks = self._cells(), {}
        for pid in cells:
            if pid not in self._local_rank:
                try:
                    self._local_rank[pid] = psutil.Process(pid).environ().get("LOCAL_RANK")
                except psutil.Error:
                    continue
            local = self._local_rank[pid]
            if local is not None:
                ranks[pid] = int(local)
        if not ranks:
            return cells
        return [pid for pid, local in ranks.items() if local == index]

    def used_mib(self, index: int) -> float:
        self.calls += 1
        cfg = self.config
        if cfg.get("fail_from_call") and self.calls >= cfg["fail_from_call"]:
            raise FakeNvmlError("GPU is lost")
        if cfg.get("fail_every") and self.calls % cfg["fail_every"] == 0:
            raise FakeNvmlError("Unknown Error")
        mib = self._tree_mib(index)
        tree = mib if mib and self._cells() else 0
        return float(self._dev(index).get("used_mib", 0)) + tree

    def _tree_mib(self, index: int) -> float:
        node = self.config.get("node_tree_mib", {}).get(os.environ.get("PEFT_BENCH_NODE_RANK", ""))
        return node if node is not None else self._dev(index).get("tree_mib", self.config.get("tree_mib", 0))

    def total_mib(self, index: int) -> float:
        return float(self._dev(index).get("total_mib", 81920))

    def processes(self, index: int) -> dict[int, float | None]:
        cfg = self.config
        procs = {int(p["pid"]): float(p["used_mib"]) for p in self._dev(index).get("processes", [])}
        if self._tree_mib(index) and cfg.get("tree_report") != "hidden":
            for pid in self._on_device(index):
                procs[pid] = None if cfg.get("tree_report") == "none" else float(self._tree_mib(index))
        return procs

    def energy_mj(self, index: int) -> float | None:
        rate = self.config.get("watts")
        if rate is None:
            return None
        import time

        return time.time() * rate * 1000  # a counter that grows at `watts`


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def env(config: dict[str, Any] | None = None, path: str | None = None) -> dict[str, str]:
    """Environment for a subprocess (or this process) that uses the fake."""
    here = os.path.dirname(os.path.abspath(__file__))
    out = {
        "PEFT_BENCH_NVML_BACKEND": "fake_nvml:FakeNvml",
        "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]),
    }
    if config is not None:
        out[CONFIG_ENV] = json.dumps(config)
    if path is not None:
        out[FILE_ENV] = path
    return out
