"""Runs specs: one isolated child per cell, NVML sampled over its tree, exits classified, one record appended
per attempt. Failures are data: an OOM, crash or timeout becomes a record and the suite goes on."""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import nvml, records
from bench.envinfo import base_env
from bench.launcher import make_launcher
from bench.outcome import build_record, job_failure_record, progress_line
from bench.scheduler import execute
from bench.spec import RunSpec


@dataclass
class RunOptions:
    out_dir: Path
    force: bool = False
    only: list[str] = field(default_factory=list)
    launcher: str = "auto"  # auto: fork-server without a GPU, spawn with one (see resolve_launcher)
    allow_busy_gpu: bool = False
    busy_threshold_mib: float = 500.0
    gpus: list[int] | None = None  # None: every GPU NVML sees (one CPU slot without a GPU)
    executor: str = "local"  # local | slurm | submitit-local (bench/slurm.py)
    executor_settings: dict[str, Any] = field(default_factory=dict)
    nvml_interval_s: float = 0.01


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=dict)
    ran: int = 0
    skipped: int = 0
    canceled: bool = False
    wall_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 130 if self.canceled else 0


class BusyGpu(RuntimeError):
    pass


def resolve_launcher(name: str, gpu_present: bool) -> str:
    """`auto` picks the fork server on CPU-only machines (no per-cell import bill) and plain spawn where a GPU
    is present: the fork server has not yet been validated with CUDA on a GPU node, so spawn stays the safe
    default there until it is (README, "Launchers")."""
    if name != "auto":
        return name
    return "spawn" if gpu_present else "fork-server"


def select(specs: list[RunSpec], patterns: list[str]) -> list[RunSpec]:
    """Cells whose run_id matches any glob (or contains the text) in `patterns`; all when none given."""
    if not patterns:
        return specs
    return [s for s in specs if any(fnmatch.fnmatch(s.run_id, p) or p in s.run_id for p in patterns)]


class _Cancel:
    """SIGINT/SIGTERM set a flag; the loop stops the running cell and records it canceled."""

    def __init__(self) -> None:
        self.flag = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Cancel:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def run_specs(specs: list[RunSpec], opts: RunOptions, progress: Callable[[str], None] = print) -> RunSummary:
    """Run every selected, unfinished spec into opts.out_dir; returns counts per status."""
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    t_start = time.perf_counter()
    with records.OutDirLock(out):
        read = records.read_records(out)
        for w in read.warnings:
            progress(f"warning: {w}")
        done = set() if opts.force else records.finished_ids(read.records)
        chosen = select(specs, opts.only)
        todo = [s for s in chosen if s.run_id not in done]
        summary.skipped = len(chosen) - len(todo)
        if summary.skipped:
            progress(f"resume: {summary.skipped} of {len(chosen)} cells already finished in {out}, skipped")
        backend, reason = nvml.open_backend()
        slots = gpu_slots(opts.gpus, backend)
        if backend is not None and not opts.allow_busy_gpu:
            for gpu in slots:
                busy = nvml.busy_processes(backend, gpu, opts.busy_threshold_mib, {os.getpid()})
                if busy:
                    raise BusyGpu(
                        f"GPU {gpu} is busy (> {opts.busy_threshold_mib:.0f} MiB used by other "
                        f"processes); measurements would be untrustworthy. Processes:\n  "
                        + "\n  ".join(busy)
                        + "\nUse --allow-busy-gpu to run anyway."
                    )
        launcher_name = resolve_launcher(opts.launcher, backend is not None)
        launchers = {slot: make_launcher(launcher_name) for slot in slots}
        if todo and opts.executor == "local":
            for launcher in launchers.values():
                launcher.start(dict(os.environ))
        env_parent = base_env()
        if backend is not None:
            env_parent.update(gpu_driver=backend.driver())
        if len(slots) > 1:
            progress(f"running on GPUs {', '.join(map(str, slots))}, one cell per GPU at a time")
        t_cells = time.perf_counter()

        def run(spec: RunSpec, slot: int | None) -> dict[str, Any]:
            return run_one(spec, out, launchers[slot], backend, reason, opts, cancel, env_parent, slot)

        def done(rec: dict[str, Any], slot: int | None) -> None:
            records.append_record(out, rec)
            summary.ran += 1
            summary.counts[rec["status"]] = summary.counts.get(rec["status"], 0) + 1
            per_cell = (time.perf_counter() - t_cells) / summary.ran
            progress(
                progress_line(
                    summary.ran, len(todo), rec, rec["duration_s"] or 0.0, per_cell * (len(todo) - summary.ran)
                )
            )
            if rec["status"] == "canceled" and not summary.canceled:
                summary.canceled = True
                progress("canceled: stopped after recording the running cell(s); rerun to resume")

        try:
            with _Cancel() as cancel:
                if opts.executor == "local":
                    execute(todo, slots, run, done, lambda: cancel.flag or summary.canceled)
                else:
                    from bench import slurm

                    progress(f"submitting {len(todo)} jobs with submitit ({opts.executor}); logs in {out / 'slurm'}")
                    slurm.run_jobs(
                        todo,
                        out,
                        opts.executor,
                        opts.executor_settings,
                        opts.nvml_interval_s,
                        lambda rec: done(rec, None),
                        cancel,
                        lambda spec, status, msg: job_failure_record(spec, out, status, msg),
                    )
        finally:
            for launcher in launchers.values():
                launcher.close()
    summary.wall_s = time.perf_counter() - t_start
    return summary


def _archive_previous_attempt(run_dir: Path) -> int:
    """Move an earlier attempt's files to run_dir/attempts/N; return this attempt's number."""
    attempts = run_dir / "attempts"
    previous = [p for p in run_dir.iterdir() if p.name != "attempts"] if run_dir.exists() else []
    n_done = len(list(attempts.iterdir())) if attempts.exists() else 0
    if previous:
        dest = attempts / str(n_done + 1)
        dest.mkdir(parents=True)
        for p in previous:
            shutil.move(str(p), dest / p.name)
        n_done += 1
    return n_done + 1


def gpu_slots(gpus: list[int] | None, backend: Any) -> list[int | None]:
    """GPU indices to run on: the ones asked for, else every device NVML sees, else one CPU slot (None)."""
    if gpus:
        return list(gpus)
    if backend is not None:
        return list(range(backend.device_count()))
    return [None]


def run_one(
    spec: RunSpec,
    out: Path,
    launcher: Any,
    backend: Any,
    reason: str | None,
    opts: RunOptions,
    cancel: _Cancel,
    env_parent: dict[str, Any],
    gpu: int | None,
) -> dict[str, Any]:
    run_dir = out / "runs" / spec.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt = _archive_previous_attempt(run_dir)
    (run_dir / "spec.json").write_text(spec.to_json())
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    (run_dir / "launch.json").write_text(json.dumps({"launch_time": time.time()}))
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    sampler = nvml.Sampler(backend, gpu or 0, reason, opts.nvml_interval_s)
    started_unix = time.time()
    proc = launcher.launch(run_dir, env)
    sampler.start(proc.pid)
    outcome = None
    while (rc := proc.poll()) is None:
        if cancel.flag:
            outcome = "canceled"
        elif time.perf_counter() - t0 > spec.timeout_s:
            outcome = "timeout"
        if outcome:
            proc.kill_tree()
            rc = proc.poll()
            break
        time.sleep(0.01)
    peaks = sampler.stop()
    duration = time.perf_counter() - t0
    rec = build_record(spec, run_dir, attempt, rc, outcome, peaks, started_at, duration, env_parent, launcher.name, gpu)
    if backend is not None and gpu is not None:
        rec["env"]["nvml_gpu_name"] = backend.name(gpu)
    rec.update(started_unix=started_unix, ended_unix=time.time())
    return rec
