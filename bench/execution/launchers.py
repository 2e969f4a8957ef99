"""How a cell process starts. `spawn`: a fresh `python -m bench.cell RUN_DIR` per cell. `fork-server`: one warm
server per slot (bench/execution/forkserver.py) forks each cell. Either way the cell runs in its own session
(process group), dies with its parent (PR_SET_PDEATHSIG), and writes the same files.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import psutil

from bench.cell import PARENT_ENV
from bench.execution.forkserver import PRELOAD_ENV
from bench.results.rundir import RunDir
from bench.suite.spec import RunSpec


class LauncherError(RuntimeError):
    """A launcher could not start (e.g. a fork server that initialised CUDA)."""


class CellProcess(Protocol):
    pid: int

    def poll(self) -> int | None:
        """None while running, else the exit code (negative: killed by that signal)."""


class Launcher(Protocol):
    """Starts cell processes for one slot: `start` before the first cell (warm-up), `launch` per cell, `close`."""

    name: str

    def start(self, env: dict[str, str], preload: Sequence[str] = ()) -> None: ...
    def launch(self, run_dir: RunDir, env: dict[str, str]) -> CellProcess: ...
    def close(self) -> None: ...


def kill_processes(pids: set[int] | list[int], group: int | None = None, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL a process group and the given processes (with their descendants); return the PIDs still alive."""
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs += [p, *p.children(recursive=True)]
        except psutil.Error:
            pass
    if group is not None:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout_s)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


class SpawnedCell:
    """`python -m bench.cell RUN_DIR`, or (module `bench.cell.ranks`) a distributed cell's agent, torchrun's ranks
    under it in the same session, so the cell's tree is still one group to kill."""

    def __init__(self, run_dir: RunDir, env: dict[str, str], module: str = "bench.cell"):
        with open(run_dir.stdout, "wb") as out, open(run_dir.stderr, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module, str(run_dir.path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env={**env, PARENT_ENV: str(os.getpid())},
                start_new_session=True,
            )
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()


class SpawnLauncher:
    name = "spawn"

    def start(self, env: dict[str, str], preload: Sequence[str] = ()) -> None:
        """Nothing to warm up: every cell pays its own start."""

    def launch(self, run_dir: RunDir, env: dict[str, str]) -> CellProcess:
        return SpawnedCell(run_dir, env)

    def close(self) -> None:
        pass


class ForkServerCell:
    def __init__(self, server: ForkServerLauncher, pid: int):
        self.server, self.pid = server, pid

    def poll(self) -> int | None:
        return self.server.exit_code(self.pid)


class ForkServerLauncher:
    """One `python -m bench.execution.forkserver` per slot; every cell is a fresh fork of it (own PID, own
    session, nothing from earlier cells), so a cell pays no import bill. The server never initialises CUDA;
    one that did is refused."""

    name = "fork-server"

    def __init__(self, log: Path | None = None) -> None:
        self.log = log  # the server's stderr (library warnings at import), kept out of the runner's output
        self.proc: subprocess.Popen | None = None
        self.exits: dict[int, int] = {}
        self.replies: queue.Queue = queue.Queue()
        self.starts = 0  # a server that dies is restarted once for the remaining cells
        self.env: dict[str, str] = {}
        self.preload: list[str] = []  # the optional libraries the slot's cells import (cell_imports)

    def _start(self, env: dict[str, str]) -> None:
        if self.starts >= 2:
            code = self.proc.poll() if self.proc else None
            raise LauncherError(f"the fork server died again (exit code {code}) after a restart; see {self.log}")
        self.starts += 1
        self.replies = queue.Queue()  # a dead server's last words must not answer the new one
        stderr = open(self.log, "ab") if self.log else None
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bench.execution.forkserver", ",".join(self.preload)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**env, PARENT_ENV: str(os.getpid())},
                start_new_session=True,
            )
        finally:
            if stderr:
                stderr.close()
        threading.Thread(target=self._read, args=(self.proc, self.replies), daemon=True).start()
        msg = self._reply(300, "start")
        if msg.get("cuda_initialized"):
            self.close()
            raise LauncherError(
                "the fork server initialised CUDA while importing its libraries; forked cells could not use the GPU. "
                f"Preloaded: {', '.join(msg.get('preloaded', []))}. Use --launcher spawn, or drop the module that "
                "touches CUDA at import from " + PRELOAD_ENV
            )
        if "ready" not in msg:
            raise LauncherError(f"fork server failed to start: {msg.get('error', msg)}")

    def _reply(self, timeout_s: float, what: str) -> dict:
        try:
            return self.replies.get(timeout=timeout_s)
        except queue.Empty:
            raise LauncherError(f"fork server did not answer within {timeout_s:.0f} s ({what})") from None

    def _read(self, proc: subprocess.Popen, replies: queue.Queue) -> None:
        for line in proc.stdout:
            msg = json.loads(line)
            if "exit" in msg:
                self.exits[msg["exit"]] = msg["code"]
            else:
                replies.put(msg)
        replies.put({"error": f"fork server exited with code {proc.wait()}"})

    def start(self, env: dict[str, str], preload: Sequence[str] = ()) -> None:
        """Start the server before the first cell, so its import time is not charged to that cell; `preload`: the
        optional libraries its cells import (a library no cell uses is not imported: peft's import alone pulls in
        bitsandbytes and torch._dynamo, ~3 s of CPU)."""
        self.env = dict(env)  # the server's own environment (a restart must not inherit a cell's token)
        self.preload = list(preload)
        self._ensure_running()

    def _ensure_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._start(self.env or dict(os.environ))

    def launch(self, run_dir: RunDir, env: dict[str, str]) -> CellProcess:
        self._ensure_running()  # restarts a server that died (once)
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v}  # per-cell settings (GPU, launch time)
        self.proc.stdin.write(json.dumps({"run_dir": str(run_dir.path), "env": changed}) + "\n")
        self.proc.stdin.flush()
        msg = self._reply(60, "launch")
        if "pid" not in msg:
            raise LauncherError(f"fork server did not start the cell: {msg.get('error', msg)}")
        return ForkServerCell(self, msg["pid"])

    def exit_code(self, pid: int) -> int | None:
        if pid in self.exits:
            return self.exits[pid]
        if self.proc is not None and self.proc.poll() is not None and not psutil.pid_exists(pid):
            return -9  # the server died; its child's exit status is lost
        return None

    def close(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_processes([self.proc.pid], group=self.proc.pid)
            self.proc.wait(timeout=10)


LAUNCHERS: dict[str, Callable[[Path | None], Launcher]] = {
    "spawn": lambda log: SpawnLauncher(),
    "fork-server": ForkServerLauncher,  # `log` receives the server's own stderr
}


def preload_for(specs: Sequence[RunSpec]) -> list[str]:
    """The optional libraries these cells import (the union of bench.cell.steps.cell_imports): what a fork server
    for them preloads. A cell whose method or task cannot be loaded adds nothing; the cell reports why."""
    from bench.cell.steps import cell_imports

    names: list[str] = []
    for spec in specs:
        try:
            names += cell_imports(spec)
        except Exception:  # noqa: BLE001 - a broken plugin fails its own cell, with its own error
            continue
    return sorted(set(names))


def make_launcher(name: str, log: Path | None = None) -> Launcher:
    """A launcher by name (a key of LAUNCHERS); ValueError naming the choices for any other."""
    if name not in LAUNCHERS:
        raise ValueError(f"unknown launcher {name!r}; valid: auto, {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name](log)


def resolve_launcher(name: str, gpu_present: bool) -> str:
    """`auto` picks the fork server on CPU-only machines (no per-cell import bill) and spawn where a GPU is
    present: the fork server keeps CUDA out of the server (tested), but its records have not yet been compared
    with spawn's on a GPU, so spawn stays the GPU default until a device run shows they match (README)."""
    if name != "auto":
        return name
    return "spawn" if gpu_present else "fork-server"


def wait_for_exit(proc: CellProcess, timeout_s: float) -> int | None:
    """The exit code once the process has ended, polling for at most timeout_s."""
    deadline = time.monotonic() + timeout_s
    while (rc := proc.poll()) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return rc
