"""Supervise one cell on this machine: launch it, sample NVML over its process tree, wait with a bounded clock,
clean up every process it started (whatever the outcome), and build its record. Both executors call this; it
knows nothing of the runner or the suite.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psutil

from bench.cell import LAUNCH_ENV
from bench.execution.base import EXIT_GRACE_S, HEARTBEAT_S
from bench.execution.gpus import GpuSlot
from bench.execution.launchers import CellProcess, Launcher, SpawnedCell, kill_processes, wait_for_exit
from bench.results.cell_result import CellResult
from bench.results.record import CellExit, Record, Status, build_record
from bench.results.rundir import RunDir
from bench.suite.spec import RunSpec
from bench.trackers import Measured, Tracker, nvml
from bench.trackers.cpu_load import CpuLoadTracker, noise_verdict
from bench.trackers.multi_gpu import rank_rows
from bench.trackers.phases import read_marks
from bench.trackers.rss import RssTracker

CELL_TOKEN_ENV = "PEFT_BENCH_CELL_TOKEN"  # inherited by everything a cell starts: how strays are found


@dataclass(kw_only=True)
class CellJob:
    spec: RunSpec
    run_dir: RunDir
    launcher: Launcher
    slot: GpuSlot | None = None
    backend: nvml.Backend | None = None
    nvml_reason: str | None = None
    nvml_interval_s: float = 0.01
    env_parent: dict[str, Any] = field(default_factory=dict)
    should_stop: Callable[[], bool] = lambda: False
    exit_grace_s: float = EXIT_GRACE_S  # how long a cell may take to exit after writing its result
    notes: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)  # e.g. the GPU's memory at suite start
    progress: Callable[[str], None] = lambda line: None  # where "still running" lines go (the runner's progress)
    heartbeat_s: float = HEARTBEAT_S
    more_slots: tuple[GpuSlot, ...] = ()  # a distributed GPU cell's other GPUs (NVML samples `slot`'s)
    ready: Callable[[], None] = lambda: None  # called once the run dir is this attempt's, before the launch


TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def cell_env(spec: RunSpec, slot: GpuSlot | None, token: str, more: tuple[GpuSlot, ...] = ()) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}  # a runner inside torchrun: not a rank
    env.update({CELL_TOKEN_ENV: token, LAUNCH_ENV: repr(time.time())})
    if slot is not None:
        env.update(slot.cell_env())
        if more:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(s.uuid for s in (slot, *more))
        if spec.cuda_alloc_conf:
            env["PYTORCH_CUDA_ALLOC_CONF"] = spec.cuda_alloc_conf
    elif spec.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU cell never creates a CUDA context on someone's GPU
    return env


class TreeWatch:
    """Remembers every process seen in the cell's tree (PID + start time), so ones that leave the tree are
    still found and killed when the cell ends."""

    def __init__(self, pid: int):
        self.pid, self.seen = pid, {}
        self.poll()

    def poll(self) -> None:
        try:
            root = psutil.Process(self.pid)
            for p in [root, *root.children(recursive=True)]:
                self.seen.setdefault(p.pid, p.create_time())
        except psutil.Error:
            pass

    def alive(self) -> set[int]:
        out = set()
        for pid, created in self.seen.items():
            try:
                if psutil.Process(pid).create_time() == created:
                    out.add(pid)
            except psutil.Error:
                pass
        return out


def strays(token: str, since: float) -> set[int]:
    """Processes that carry the cell's token in their environment (started by it, wherever they went)."""
    out = set()
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if p.info["create_time"] >= since - 1 and p.environ().get(CELL_TOKEN_ENV) == token:
                out.add(p.pid)
        except psutil.Error:
            continue
    return out


def supervise_cell(job: CellJob) -> Record:
    """Run one cell to its end and return its record."""
    spec, rd = job.spec, job.run_dir
    attempt = rd.new_attempt()
    rd.spec.write_text(spec.to_json())
    job.ready()
    token = f"{spec.run_id}:{attempt}:{uuid.uuid4().hex[:8]}"
    started_at, started_unix, t0 = datetime.now(UTC).isoformat(timespec="seconds"), time.time(), time.perf_counter()
    trackers = make_trackers(job)
    env = cell_env(spec, job.slot, token, job.more_slots)
    # a distributed cell: its torchrun agent, whatever the slot's launcher (torchrun starts fresh rank processes)
    proc = SpawnedCell(rd, env, "bench.cell.ranks") if spec.distributed else job.launcher.launch(rd, env)
    for tracker in trackers:
        tracker.start(proc.pid)
    watch = TreeWatch(proc.pid)
    exit, notes = wait_cell(proc, job, watch)
    for tracker in trackers:
        tracker.stop()
    notes += cleanup(proc, watch, token, started_unix, job)
    ended_unix = time.time()
    child = rd.read_result()
    parent = parent_view(job, trackers, child, ended_unix)
    parent.update(
        attempt=attempt,
        notes=[*job.notes, *notes, *parent.get("notes", [])],
        runner_pid=os.getpid(),
        launcher=job.launcher.name,
        gpu_index=job.slot.index if job.slot else None,
        run_dir=str(rd.path),
        started_at=started_at,
        started_unix=started_unix,
        ended_unix=ended_unix,
        duration_s=time.perf_counter() - t0,
    )
    exit.stderr_tail = rd.stderr_tail()
    return build_record(spec, child, exit, parent)


def still_running(job: CellJob, elapsed: float) -> str:
    """A progress line for a long cell: the phase it is in (from its marks) and for how long."""
    spans = read_marks(job.run_dir.phases)
    open_phases = [(name, s["start_unix"]) for name, s in spans.items() if "end_unix" not in s and "start_unix" in s]
    if not open_phases:
        return f"  ... {job.spec.run_id}: running for {elapsed:.0f} s (starting)"
    name, since = max(open_phases, key=lambda p: p[1])
    return f"  ... {job.spec.run_id}: in its {name} phase for {time.time() - since:.0f} s (cell {elapsed:.0f} s)"


def wait_cell(proc: CellProcess, job: CellJob, watch: TreeWatch) -> tuple[CellExit, list[str]]:
    """Poll until the cell exits, is canceled, times out, or lingers after writing its result; every
    `heartbeat_s` a long cell says which phase it is in."""
    t0, n, written_at = time.monotonic(), 0, None
    beat = t0 + job.heartbeat_s
    while (rc := proc.poll()) is None:
        n += 1
        if n % 25 == 0:
            watch.poll()
        now = time.monotonic()
        if now >= beat:
            job.progress(still_running(job, now - t0))
            beat = now + job.heartbeat_s
        if job.should_stop():
            return CellExit(None, Status.CANCELED, "cell canceled by a signal to the runner"), []
        if written_at is None and job.run_dir.result.exists():
            written_at = now
        if written_at is not None and now - written_at > job.exit_grace_s:
            note = f"the cell wrote its result but had not exited {job.exit_grace_s:.0f} s later; killed"
            return CellExit(None), [note]
        if now - t0 > job.spec.timeout_s:
            if job.run_dir.result.exists():  # finished just in time: its own verdict stands
                return CellExit(None), [f"the cell had not exited at its {job.spec.timeout_s:g} s timeout; killed"]
            return CellExit(None, Status.TIMEOUT, f"cell timeout after {job.spec.timeout_s:g} s"), []
        time.sleep(0.02)
    return CellExit(rc), []


def cleanup(proc: CellProcess, watch: TreeWatch, token: str, since: float, job: CellJob) -> list[str]:
    """Kill the cell's process group, every process seen in its tree and every process carrying its token;
    say what had outlived the cell and what is still on its GPU."""
    watch.poll()
    others = (watch.alive() | strays(token, since)) - {proc.pid}
    still = kill_processes({proc.pid, *others}, group=proc.pid)
    if proc.poll() is None:
        wait_for_exit(proc, 10)
    notes = []
    if others:
        notes.append(f"{len(others)} process(es) started by the cell outlived it and were killed: {sorted(others)}")
    if still:
        notes.append(f"process(es) {still} could not be killed")
    if job.backend is not None and job.slot is not None:
        try:
            on_gpu = set(job.backend.processes(job.slot.index)) & ({proc.pid} | others)
        except Exception:  # an NVML error must not cost the record
            on_gpu = set()
        if on_gpu:
            notes.append(f"process(es) {sorted(on_gpu)} of the cell still hold GPU memory after the kill")
    return notes


def make_trackers(job: CellJob) -> list[Tracker]:
    """What the supervisor measures from outside the cell: its GPU through NVML (nulls with the reason without
    one) and its process tree's resident memory."""
    slots = (job.slot, *job.more_slots) if job.slot is not None else ()
    return node_trackers(job.backend, slots, job.nvml_interval_s, job.nvml_reason)


def node_trackers(backend: Any, slots: tuple[GpuSlot, ...], interval_s: float, reason: str | None) -> list[Tracker]:
    """NVML of the GPUs a cell holds on this node (rank i on the i-th; none: GPU figures null with the reason), the
    resident memory of its process tree, and the machine's CPU load."""
    index = slots[0].index if slots else 0
    nvml_tracker: Tracker = nvml.NvmlTracker(backend, index, interval_s, reason)
    if len(slots) > 1:  # a distributed GPU cell: every GPU it holds, rank i on the i-th
        from bench.trackers.multi_gpu import MultiGpuTracker

        nvml_tracker = MultiGpuTracker([nvml.NvmlTracker(backend, s.index, interval_s, reason) for s in slots])
    return [nvml_tracker, RssTracker(), CpuLoadTracker()]


def attribute_phases(
    trackers: list[Tracker], child: CellResult | None, rd: RunDir, ended: float
) -> tuple[dict[str, dict[str, Any]], Measured]:
    """The phases the cell marked (its result's, else its marks file; a phase it never ended, because it died,
    closes at `ended`) and what the trackers measured over them, per timed token where the cell said its tokens."""
    phases = child.phases if child and child.phases else read_marks(rd.phases)
    for span in phases.values():
        span.setdefault("end_unix", ended)
    timed_tokens = child.metrics.get("timed_tokens") if child else None
    measured = Measured()
    for tracker in trackers:
        measured.merge(tracker.attribute(phases, timed_tokens))
    return phases, measured


def parent_view(job: CellJob, trackers: list[Tracker], child: CellResult | None, ended: float) -> dict[str, Any]:
    """What the supervisor measured, attributed to the phases the cell marked, plus its own view (env, notes)."""
    phases, measured = attribute_phases(trackers, child, job.run_dir, ended)
    measured.metrics.update(job.metrics)
    noisy, why = noise_verdict({**(child.metrics if child else {}), **measured.metrics})
    measured.metrics["noisy"] = noisy
    if noisy is None:
        measured.missing["noisy"] = why
    elif noisy:
        measured.notes.append(why)
    env = dict(job.env_parent)
    if job.slot is not None:
        env.update(nvml_gpu_name=job.slot.name, nvml_gpu_uuid=job.slot.uuid)
    phase_figs = {k: {**v, **measured.per_phase.get(k, {})} for k, v in phases.items()}
    per_gpu = rank_rows(measured, 1 + len(job.more_slots)) if job.spec.distributed and job.slot else None
    if per_gpu is not None:
        env["nvml_gpu_indices"] = [s.index for s in (job.slot, *job.more_slots) if s is not None]
    return {
        "per_gpu": per_gpu,
        "metrics": measured.metrics,
        "missing_reason": measured.missing,
        "phases": phase_figs,
        "env": env,
        "notes": measured.notes,
    }
