"""Result records: one JSON object per cell attempt, appended to OUT/results.jsonl with fsync under a lock.

The reader tolerates a torn last line (power loss mid-write): complete records are kept, the rest warned about.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import SCHEMA_VERSION

RESULTS = "results.jsonl"
STATUSES = ("success", "oom", "failed", "timeout", "canceled", "unsupported")
FINAL = ("success", "unsupported")  # verdicts a resume does not redo


class LockHeld(RuntimeError):
    pass


@dataclass
class ReadResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def append_record(out_dir: Path, record: dict[str, Any]) -> None:
    """Append one line and fsync it; a record is never half-written by a clean process."""
    record = {"schema_version": SCHEMA_VERSION, **record}
    line = json.dumps(record, sort_keys=True, default=str) + "\n"
    path = Path(out_dir) / RESULTS
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: Path) -> ReadResult:
    """Records from a results file or out dir; unreadable lines become warnings, never lost neighbours."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    out = ReadResult()
    if not path.exists():
        return out
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or "run_id" not in rec:
                raise ValueError("not a record")
            out.records.append(rec)
        except ValueError as exc:
            torn = number == len(lines) or (number == len(lines) - 1 and not lines[-1])
            kind = "torn last line (interrupted write?)" if torn else "unreadable line"
            out.warnings.append(f"{path}:{number}: {kind}, skipped: {exc}")
    return out


def latest_by_run_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for rec in records:
        latest[rec["run_id"]] = rec
    return latest


def finished_ids(records: list[dict[str, Any]]) -> set[str]:
    return {r["run_id"] for r in records if r.get("status") in FINAL}


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
