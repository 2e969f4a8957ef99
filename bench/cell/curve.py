"""Score curves (`eval_every: N`): the task's score every N optimizer steps, so the report can say how many
training tokens, seconds and joules a method needs to reach a share of the best score (peft's method comparison
records validation accuracy every few hundred steps for the same reason).

Each evaluation is a pause of the open training phases (`PhaseClock.paused`): outside every step's clock and left
out of the training phase's memory peaks (NVML, RSS, torch's allocator) and energy. The curve starts at step 0
with `score_before` and ends at the last step with `score_after`, so no evaluation is repeated."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any


def point(step: int, stats: Any, score: float) -> dict[str, Any]:
    return {"step": step, "tokens": stats.all_tokens, "train_s": stats.all_steps_s, "score": score}


def curve_hook(c: Any, score: Callable[[], float]) -> Callable[[int, Any], None] | None:
    """The training loop's after-step hook that scores the model (`score()`) every `eval_every` steps (None: off)."""
    every = c.spec.eval_every
    if not every:
        return None
    c.curve = []

    def after_step(step: int, stats: Any) -> None:
        done = step + 1
        if done % every or done >= c.spec.steps:  # the last step's score is score_after
            return
        allocator = c.allocator.paused() if c.allocator is not None else nullcontext()
        with c.clock.paused(), allocator:
            value = score()
            c.model.train()
        c.curve.append(point(done, stats, value))

    return after_step


def finish_curve(c: Any) -> None:
    """The record's score_curve (step 0, the evaluations, the last step) and the time its evaluations took."""
    if not c.spec.eval_every or c.train_stats is None:
        return
    points = []
    if c.metrics.get("score_before") is not None:
        points.append({"step": 0, "tokens": 0, "train_s": 0.0, "score": c.metrics["score_before"]})
    points += c.curve
    points.append(point(c.spec.steps, c.train_stats, c.metrics["score_after"]))
    c.result.score_curve = points
    train = c.clock.spans.get("train", {})
    c.metrics["curve_eval_time_s"] = sum(t1 - t0 for t0, t1 in train.get("pauses", ()))
