"""How a cell process starts. `spawn`: a fresh `python -m bench.child RUN_DIR` per cell. Each cell runs in its
own session (process group) so the runner can kill its whole tree and a terminal Ctrl-C reaches only the runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import psutil


class CellProcess(Protocol):
    pid: int

    def poll(self) -> int | None:
        """None while running, else the exit code (negative: killed by that signal)."""

    def kill_tree(self) -> None: ...


def kill_tree(pid: int) -> None:
    """SIGKILL a process, its process group and every descendant (even ones that left the group)."""
    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        procs = []
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=5)


class SpawnedCell:
    def __init__(self, run_dir: Path, env: dict[str, str]):
        self.stdout = open(run_dir / "stdout.log", "wb")
        self.stderr = open(run_dir / "stderr.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.child", str(run_dir)], stdout=self.stdout,
                                     stderr=self.stderr, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None:
            self.stdout.close()
            self.stderr.close()
        return rc

    def kill_tree(self) -> None:
        kill_tree(self.pid)
        self.proc.wait()
        self.poll()


class SpawnLauncher:
    name = "spawn"

    def launch(self, run_dir: Path, env: dict[str, str]) -> CellProcess:
        return SpawnedCell(run_dir, env)

    def close(self) -> None:
        pass


LAUNCHERS = {"spawn": SpawnLauncher}


def make_launcher(name: str) -> SpawnLauncher:
    return LAUNCHERS[name]()
