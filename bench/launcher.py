"""How a cell process starts. `spawn`: a fresh `python -m bench.child RUN_DIR` per cell. Each cell runs in its
own session (process group) so the runner can kill its whole tree and a terminal Ctrl-C reaches only the runner."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
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
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.child", str(run_dir)],
            stdout=self.stdout,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
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

    def start(self, env: dict[str, str]) -> None:
        """Nothing to warm up: every cell pays its own start."""

    def launch(self, run_dir: Path, env: dict[str, str]) -> CellProcess:
        return SpawnedCell(run_dir, env)

    def close(self) -> None:
        pass


class ForkServerCell:
    def __init__(self, server: ForkServerLauncher, pid: int):
        self.server, self.pid = server, pid

    def poll(self) -> int | None:
        return self.server.exit_code(self.pid)

    def kill_tree(self) -> None:
        kill_tree(self.pid)
        deadline = time.monotonic() + 10
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)


class ForkServerLauncher:
    """Keeps one `python -m bench.forkserver` per runner; every cell is a fresh fork of it (own PID, own
    session, nothing from earlier cells), so a cell pays no import bill."""

    name = "fork-server"

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.exits: dict[int, int] = {}
        self.pids: queue.Queue = queue.Queue()
        self.startup_s: float | None = None

    def _start(self, env: dict[str, str]) -> None:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        msg = self.pids.get(timeout=300)
        if "ready" not in msg:
            raise RuntimeError(f"fork server failed to start: {msg}")
        self.startup_s = time.perf_counter() - t0

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            msg = json.loads(line)
            if "exit" in msg:
                self.exits[msg["exit"]] = msg["code"]
            else:
                self.pids.put(msg)
        self.pids.put({"error": f"fork server exited with code {proc.wait()}"})

    def start(self, env: dict[str, str]) -> None:
        """Start the server before the first cell, so its import time is not charged to that cell."""
        if self.proc is None or self.proc.poll() is not None:
            self._start(env)

    def launch(self, run_dir: Path, env: dict[str, str]) -> CellProcess:
        self.start(env)  # restarts a server that died
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}  # per-cell settings (GPU index)
        self.proc.stdin.write(json.dumps({"run_dir": str(run_dir), "env": changed}) + "\n")
        self.proc.stdin.flush()
        msg = self.pids.get(timeout=60)
        if "pid" not in msg:
            raise RuntimeError(f"fork server did not start the cell: {msg}")
        return ForkServerCell(self, msg["pid"])

    def exit_code(self, pid: int) -> int | None:
        if pid in self.exits:
            return self.exits[pid]
        if self.proc is not None and self.proc.poll() is not None and not psutil.pid_exists(pid):
            return -9  # the server died; its child's exit status is lost
        return None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)


LAUNCHERS = {"spawn": SpawnLauncher, "fork-server": ForkServerLauncher}


def make_launcher(name: str) -> SpawnLauncher | ForkServerLauncher:
    return LAUNCHERS[name]()
