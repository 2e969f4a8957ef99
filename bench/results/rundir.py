"""Every path of an out dir, in one place (the tree is drawn in the README, section Results)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.results.cell_result import CellResult, json_safe

RESULTS = "results.jsonl"


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def spec(self) -> Path:
        return self.path / "spec.json"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def phases(self) -> Path:
        return self.path / "phases.jsonl"

    @property
    def stdout(self) -> Path:
        return self.path / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.path / "stderr.log"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint"

    @property
    def attempts(self) -> Path:
        return self.path / "attempts"

    def read_result(self) -> CellResult | None:
        """What the cell wrote, or None when it wrote nothing readable (it died before or while writing)."""
        try:
            data = json.loads(self.result.read_text())
            return CellResult.from_dict(data) if isinstance(data, dict) else None
        except (OSError, ValueError, TypeError):
            return None

    def write_result(self, result: CellResult) -> None:
        write_json_atomic(self.result, result.to_dict())

    def stderr_tail(self, lines: int = 50) -> str:
        try:
            text = self.stderr.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip("\n").split("\n")[-lines:])

    def new_attempt(self) -> int:
        """Move an earlier attempt's files to attempts/N (dropping its checkpoint); return this attempt's number."""
        previous = [p for p in self.path.iterdir() if p.name != "attempts"] if self.path.exists() else []
        n_done = len(list(self.attempts.iterdir())) if self.attempts.exists() else 0
        if previous:
            dest = self.attempts / str(n_done + 1)
            dest.mkdir(parents=True)
            for p in previous:
                if p.name == self.checkpoint.name:
                    shutil.rmtree(p, ignore_errors=True)  # checkpoints are large; only the latest attempt keeps one
                else:
                    shutil.move(str(p), dest / p.name)
            n_done += 1
        self.path.mkdir(parents=True, exist_ok=True)
        return n_done + 1


@dataclass(frozen=True)
class OutDir:
    path: Path

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def slurm(self) -> Path:
        return self.path / "slurm"

    def run(self, run_id: str) -> RunDir:
        return RunDir(self.path / "runs" / run_id)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
