"""The phases of a cell and their marks.

The cell appends `{"phase", "start_unix"}` / `{"phase", "end_unix"}` lines to RUN_DIR/phases.jsonl as it goes
(fsync'd, so they survive a crash), and keeps the same spans for result.json. The trackers attribute their
timelines to them; a cell that died mid-phase still has the marks it wrote.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any


class Phase(StrEnum):
    """The life of one cell, in order (bench/cell/steps.py runs one step per phase):

    IMPORT        import torch, transformers, the plugins and the libraries they require
    LOAD          model, tokenizer = the base, built or loaded on its device in its storage dtype
    DATA          task.load(tokenizer, model.config); general text for forgetting (causal LM)
    APPLY         model = method.apply(model); parameter counts, dtypes, memory estimate
    EVAL_BEFORE   score_before = task.evaluate(model)        skipped when eval_before is false
    TRAIN         for step in range(steps): forward, backward, optimizer step
      TRAIN_TIMED     the steps after warm-up: the window of every headline speed, memory and energy figure
      (score-curve evaluations, `eval_every`, are pauses of both: excluded from their time, memory and energy)
    EVAL_AFTER    score_after = task.evaluate(model); general-text loss after (forgetting)
    SAVE          method.save(model, RUN_DIR/checkpoint)      skipped when save_checkpoint is false
    INFERENCE     generation cost: base, unmerged adapter, merged   only when `inference` is set
    """

    IMPORT = "import"
    LOAD = "load"
    DATA = "data"
    APPLY = "apply"
    EVAL_BEFORE = "eval_before"
    TRAIN = "train"
    TRAIN_TIMED = "train_timed"
    EVAL_AFTER = "eval_after"
    SAVE = "save"
    INFERENCE = "inference"

    @property
    def timing_key(self) -> str:
        """The record's `timings` key for this phase (the names records have always used)."""
        return TIMING_KEYS.get(self, f"time_{self.value}_s")


TIMING_KEYS = {
    Phase.LOAD: "time_model_load_s",
    Phase.APPLY: "time_method_apply_s",
}
EVALUATIONS = (Phase.EVAL_BEFORE, Phase.EVAL_AFTER)


class PhaseClock:
    """Marks phase boundaries (live, to a file) and collects their spans and durations."""

    def __init__(self, path: Path | None, sync: Callable[[], None] = lambda: None):
        self.path, self.sync = path, sync
        self.spans: dict[str, dict[str, float]] = {}  # phase value -> start/end/duration

    def start(self, name: Phase) -> None:
        self.sync()  # a GPU phase boundary means something only once queued work has finished
        self.spans[name] = {"start_unix": time.time()}
        self._write({"phase": name, "start_unix": self.spans[name]["start_unix"]})

    def end(self, name: Phase) -> None:
        self.sync()
        span = self.spans[name]
        span["end_unix"] = time.time()
        span["duration_s"] = span["end_unix"] - span["start_unix"] - paused_s(span)
        self._write({"phase": name, "end_unix": span["end_unix"]})

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Work inside every open phase that is not part of it (a score-curve evaluation mid-training): the interval
        is recorded as a pause of each open phase, and trackers leave it out of that phase's figures."""
        self.sync()
        t0 = time.time()
        try:
            yield
        finally:
            self.sync()
            t1 = time.time()
            for name, span in self.spans.items():
                if "end_unix" not in span:
                    span.setdefault("pauses", []).append([t0, t1])
                    self._write({"phase": name, "pause": [t0, t1]})

    @contextmanager
    def phase(self, name: Phase) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.end(name)

    def timings(self) -> dict[str, float]:
        out = {Phase(k).timing_key: v["duration_s"] for k, v in self.spans.items() if "duration_s" in v}
        evals = [self.spans[k]["duration_s"] for k in EVALUATIONS if "duration_s" in self.spans.get(k, {})]
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
        if "pause" in mark:
            span.setdefault("pauses", []).append(mark["pause"])
            continue
        span.update({k: v for k, v in mark.items() if k != "phase"})
    return spans


def paused_s(span: dict[str, Any]) -> float:
    return sum(t1 - t0 for t0, t1 in span.get("pauses", ()))


def inside(t: float, span: dict[str, Any]) -> bool:
    """Whether unix time t is in the span and not in one of its pauses."""
    if not span["start_unix"] <= t <= span["end_unix"]:
        return False
    return not any(t0 <= t <= t1 for t0, t1 in span.get("pauses", ()))
