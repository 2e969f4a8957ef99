"""The runner owns the out dir: lock, resume, selection, appending records, progress and the summary. Where and
how cells run is the executor's business (bench/execution). Failures are data: an OOM, crash or timeout is a
record and the suite goes on; a full disk stops the suite cleanly, with everything written before intact.
"""

from __future__ import annotations

import errno
import fnmatch
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.execution import ExecutorOptions, LocalOptions, RunContext, make_executor
from bench.results import store
from bench.results.numbers import fmt_count, fmt_num, headline_memory
from bench.results.record import Record, Status
from bench.results.rundir import OutDir
from bench.suite.executor import SlurmSettings
from bench.suite.spec import NOT_HASHED, RunSpec


@dataclass
class RunOptions:
    out_dir: Path
    force: bool = False
    only: list[str] = field(default_factory=list)
    executor: str = "local"  # a name of bench.execution.EXECUTORS
    local: LocalOptions = field(default_factory=LocalOptions)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)


@dataclass
class RunSummary:
    counts: dict[str, int] = field(default_factory=dict)
    ran: int = 0
    skipped: int = 0
    canceled: bool = False
    stopped: str | None = None  # why the suite stopped early (disk full)
    wall_s: float = 0.0

    def exit_code(self, strict: bool = False) -> int:
        """130 canceled; 1 stopped, or a cell `failed` / `timeout` (a bug or a hang; with strict: anything but
        `success`); 0 otherwise: `unsupported` and `oom` are results, not errors."""
        if self.canceled:
            return 130
        bad = {k for k, v in self.counts.items() if v} - ({"success"} if strict else {"success", "unsupported", "oom"})
        return 1 if self.stopped or bad else 0


def select(specs: list[RunSpec], patterns: list[str]) -> list[RunSpec]:
    """Cells whose run_id matches any glob (or contains the text) in `patterns`; all when none given."""
    if not patterns:
        return specs
    return [s for s in specs if any(fnmatch.fnmatch(s.run_id, p) or p in s.run_id for p in patterns)]


def spec_changes(old: dict[str, Any], new: RunSpec) -> str:
    """`steps 20 -> 30, lr ...`: what differs between a stored spec and the current one."""
    now = new.to_dict()
    keys = sorted(k for k in now if k not in NOT_HASHED and old.get(k) != now[k])
    return ", ".join(f"{k} {old.get(k)!r} -> {now[k]!r}" for k in keys) or "spec hash differs"


def resume_todo(
    specs: list[RunSpec], records: list[dict[str, Any]], force: bool
) -> tuple[list[RunSpec], int, list[str]]:
    """(cells to run, cells skipped as finished with the same spec, one notice per finished cell whose spec
    changed since)."""
    done = {} if force else store.finished(records)
    todo, notices = [], []
    for spec in specs:
        rec = done.get(spec.run_id)
        if rec is None:
            todo.append(spec)
        elif store.record_spec_hash(rec) != spec.spec_hash:
            todo.append(spec)
            changes = spec_changes(rec.get("spec") or {}, spec)
            notices.append(f"rerun {spec.run_id}: its spec changed since the finished record ({changes})")
    return todo, len(specs) - len(todo), notices


class _Cancel:
    """SIGINT/SIGTERM/SIGHUP set a flag; the executor stops the running cell(s) and records them canceled."""

    def __init__(self) -> None:
        self.flag = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Cancel:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) is signal.SIG_IGN:  # nohup: an ignored signal stays ignored
                    continue
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.flag = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_specs(specs: list[RunSpec], opts: RunOptions, progress: Callable[[str], None] = print) -> RunSummary:
    """Run every selected, unfinished spec into opts.out_dir; returns counts per status."""
    out = OutDir(Path(opts.out_dir))
    out.path.mkdir(parents=True, exist_ok=True)
    summary = RunSummary()
    t_start = time.perf_counter()
    with store.OutDirLock(out.path):
        read = store.read_records(out.path)
        for w in read.warnings:
            _warn(f"warning: {w}")
        chosen = select(specs, opts.only)
        todo, summary.skipped, notices = resume_todo(chosen, read.records, opts.force)
        for line in notices:
            progress(line)
        if summary.skipped:
            progress(f"resume: {summary.skipped} of {len(chosen)} cells already finished in {out.path}, skipped")
        if todo:
            _execute(todo, opts, out, summary, progress)
    summary.wall_s = time.perf_counter() - t_start
    return summary


def _execute(todo: list[RunSpec], opts: RunOptions, out: OutDir, summary: RunSummary, progress: Callable) -> None:
    executor = make_executor(opts.executor, ExecutorOptions(local=opts.local, slurm=opts.slurm))
    t_cells = time.perf_counter()
    lock = threading.Lock()

    def on_record(rec: Record) -> None:
        with lock:
            if summary.stopped:
                return
            try:
                store.append_record(out.path, rec)
            except store.DiskFull as exc:
                summary.stopped = str(exc)
                progress(f"error: {exc}; stopping after the running cell(s)")
                return
            summary.ran += 1
            summary.counts[rec.status] = summary.counts.get(rec.status, 0) + 1
            per_cell = (time.perf_counter() - t_cells) / summary.ran
            progress(progress_line(summary.ran, len(todo), rec, per_cell * (len(todo) - summary.ran)))
            if rec.status == Status.CANCELED and not summary.canceled:
                summary.canceled = True
                progress("canceled: stopped after recording the running cell(s); rerun to resume")

    with _Cancel() as cancel:
        ctx = RunContext(
            out=out,
            on_record=on_record,
            should_stop=lambda: cancel.flag or summary.canceled or bool(summary.stopped),
            progress=progress,
        )
        try:
            executor.run(todo, ctx)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            summary.stopped = f"disk full while preparing a cell: {exc}; free space and rerun to resume"
            progress(f"error: {summary.stopped}")


def progress_line(i: int, n: int, rec: Record, eta_s: float) -> str:
    m = rec.metrics
    parts = [f"[{i}/{n}]", rec.run_id, str(rec.status)]
    if rec.status == Status.SUCCESS:
        parts += [
            f"{fmt_num(m.get('tokens_per_s'))} tok/s",
            f"score {fmt_num(m.get('score_before'))} → {fmt_num(m.get('score_after'))}",
            f"trainable {fmt_count(m.get('trainable_params'))}",
            f"train peak {headline_memory(m)}",
        ]
        if (rec.checkpoint or {}).get("error"):
            parts.append("CHECKPOINT NOT SAVED (rerun retries it)")
        if m.get("noisy"):
            parts.append("noisy timing")
    elif rec.error:
        parts.append(str(rec.error.get("message", ""))[:100].replace("\n", " "))
    parts += [f"{rec.duration_s or 0.0:.1f}s", f"ETA {int(eta_s // 60)}:{int(eta_s % 60):02d}"]
    return "  ".join(parts)
