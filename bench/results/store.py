"""OUT/results.jsonl: one JSON record per line, appended with one write + fsync under the out-dir lock.

A crash mid-append can leave a torn last line without a newline; the next append first ends that line, so the
fragment stays one unreadable line and never swallows the new record. The reader keeps every complete record
and says exactly which lines it skipped and why.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results.cell_result import FINAL, Status, json_safe
from bench.results.record import FIT_CHECK_ERROR, Record
from bench.results.rundir import RESULTS


class LockHeld(RuntimeError):
    pass


class DiskFull(RuntimeError):
    """The results file could not be written (no space / quota); what was written before is intact."""


@dataclass
class ReadResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)


def append_record(out_dir: Path, record: Record | dict[str, Any]) -> None:
    """Append one record as one line with one write, after newline-terminating a torn tail; fsync."""
    data = record.to_dict() if isinstance(record, Record) else record
    line = (json.dumps(json_safe(data), sort_keys=True, default=str, allow_nan=False) + "\n").encode()
    path = Path(out_dir) / RESULTS
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # end the torn fragment first: it stays one skipped line
        written = os.write(fd, line)
        if written != len(line):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(line)} bytes)")
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            _truncate_partial(fd, size)
            raise DiskFull(f"cannot append to {path}: {exc.strerror or exc}; free space and rerun to resume") from exc
        raise
    finally:
        os.close(fd)


def _truncate_partial(fd: int, size: int) -> None:
    """Cut a partial append back to the file's previous size, so the file ends as it did."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


DICT_FIELDS = ("spec", "metrics", "missing_reason", "timings", "phases", "env")


def shape_problem(rec: Any) -> str | None:
    """Why a parsed line is not a record the readers can use (None: it is)."""
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not isinstance(rec.get("run_id"), str):
        return "no run_id"
    if rec.get("status") not in {str(s) for s in Status}:
        return f"status {rec.get('status')!r} is not one of {', '.join(str(s) for s in Status)}"
    for key in DICT_FIELDS:
        if key in rec and not isinstance(rec[key], dict):
            return f"{key} is {type(rec[key]).__name__}, not an object"
    bad = [k for k, v in (rec.get("metrics") or {}).items() if isinstance(v, (str, dict))]
    if bad:
        return f"metric(s) {bad[:3]} are not numbers"
    return None


def read_records(path: Path) -> ReadResult:
    """Records from a results file or out dir; each unreadable line is named in a warning, neighbours kept."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    out = ReadResult()
    if not path.exists():
        return out
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    last = max((i for i, ln in enumerate(lines, 1) if ln.strip()), default=0)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if problem := shape_problem(rec):
                raise ValueError(f"not a record: {problem}")
            out.records.append(rec)
        except ValueError as exc:
            kind = "torn last line (interrupted write?)" if number == last else "unreadable line"
            out.skipped_lines.append(number)
            out.warnings.append(f"{path}:{number}: {kind}, skipped ({len(line)} chars): {str(exc)[:120]}")
    return out


def latest_by_run_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[rec["run_id"]] = rec
    return latest


def finished(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """run_id -> its latest record, where that latest attempt is a final verdict (success / unsupported). The
    latest attempt decides: a success followed by a timeout is not finished. A fit-check refusal is no verdict
    on the cell (the GPU's free memory, or --no-fit-check, may differ next run): it is checked again. A success
    whose checkpoint could not be saved (disk full) is retried too."""
    return {
        run_id: r
        for run_id, r in latest_by_run_id(records).items()
        if r.get("status") in FINAL
        and (r.get("error") or {}).get("type") != FIT_CHECK_ERROR
        and not (r.get("checkpoint") or {}).get("error")  # its bytes were never measured: retried
    }


def record_spec_hash(rec: dict[str, Any]) -> str | None:
    """The record's spec hash (None for records older than the field: they count as changed)."""
    return rec.get("spec_hash")


class OutDirLock:
    """An exclusive flock on OUT/.lock holding the owner's PID; a second runner fails at once."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / ".lock"
        self.fh = None

    def __enter__(self) -> OutDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise LockHeld(
                f"{self.path.parent} is in use by another peft-bench runner (PID {holder}); "
                "wait for it or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fh:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
