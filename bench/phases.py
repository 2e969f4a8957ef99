"""Phase marks: the cell appends `{"phase", "start_unix"}` / `{"phase", "end_unix"}` lines to RUN_DIR/phases.jsonl
as it goes (fsync'd, so they survive a crash), and keeps the same spans for result.json. The supervisor
attributes its NVML timeline to them; a cell that died mid-phase still has the marks it wrote.

Phases, in order: import, load, data, apply, eval_before, train (containing train_timed: the timed steps),
eval_after, save, and optional ones a cell adds (e.g. inference).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# phase -> the timing key records have always used for it
TIMING_KEYS = {
    "import": "time_import_s",
    "load": "time_model_load_s",
    "data": "time_data_s",
    "apply": "time_method_apply_s",
    "eval_before": "time_eval_before_s",
    "train": "time_train_s",
    "eval_after": "time_eval_after_s",
    "save": "time_save_s",
    "inference": "time_inference_s",
}


class PhaseClock:
    """Marks phase boundaries (live, to a file) and collects their spans and durations."""

    def __init__(self, path: Path | None, sync: Callable[[], None] = lambda: None):
        self.path, self.sync = path, sync
        self.spans: dict[str, dict[str, float]] = {}

    def start(self, name: str) -> None:
        self.sync()  # a GPU phase boundary means something only once queued work has finished
        self.spans[name] = {"start_unix": time.time()}
        self._write({"phase": name, "start_unix": self.spans[name]["start_unix"]})

    def end(self, name: str) -> None:
        self.sync()
        span = self.spans[name]
        span["end_unix"] = time.time()
        span["duration_s"] = span["end_unix"] - span["start_unix"]
        self._write({"phase": name, "end_unix": span["end_unix"]})

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.end(name)

    def timings(self) -> dict[str, float]:
        out = {TIMING_KEYS.get(k, f"time_{k}_s"): v["duration_s"] for k, v in self.spans.items() if "duration_s" in v}
        evals = [
            self.spans[k]["duration_s"] for k in ("eval_before", "eval_after") if "duration_s" in self.spans.get(k, {})
        ]
        if evals:
            out["time_eval_s"] = sum(evals)
        return out

    def _write(self, line: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(line) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def read_marks(path: Path) -> dict[str, dict[str, float]]:
    """Spans from a marks file; a phase that never ended gets no end (the supervisor closes it at the exit)."""
    spans: dict[str, dict[str, float]] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return spans
    for line in lines:
        try:
            mark = json.loads(line)
        except ValueError:
            continue  # a torn last mark
        span = spans.setdefault(mark["phase"], {})
        span.update({k: v for k, v in mark.items() if k != "phase"})
    return spans
