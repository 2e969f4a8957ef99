"""Score curves in the report (`eval_every`): per method, the training tokens, seconds and joules to reach a target
share of the best score in its group, and a plot of score against training tokens."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.markdown import escape, fmt_num


def curve_of(value: Any) -> list[dict[str, Any]]:
    """The score_curve points of a report row (a JSON string, so CSV exports keep it)."""
    if not isinstance(value, str) or not value:
        return []
    try:
        points = json.loads(value)
    except ValueError:
        return []
    return [p for p in points if isinstance(p, dict) and isinstance(p.get("score"), (int, float))]


def threshold(group: pd.DataFrame, target: float) -> tuple[float, bool] | None:
    """(the score that counts as reaching `target` of the group's best, higher is better) or None: no score."""
    ok = group[group["status"] == "success"]
    higher = bool(ok["higher_is_better"].iloc[0]) if len(ok) else True
    scores = [float(s) for s in pd.to_numeric(ok["score_after"], errors="coerce") if math.isfinite(s)]
    for value in ok["score_curve"]:
        scores += [float(p["score"]) for p in curve_of(value) if math.isfinite(p["score"])]
    if not scores:
        return None
    best = max(scores) if higher else min(scores)
    return (best * target if higher else best / target), higher


def reached(points: list[dict[str, Any]], bar: float, higher: bool) -> dict[str, Any] | None:
    return next((p for p in points if (p["score"] >= bar if higher else p["score"] <= bar)), None)


def curve_table(group: pd.DataFrame, target: float) -> list[str]:
    """Markdown lines: cost to reach `target` of the group's best score, one row per cell with a curve."""
    rows = group[group["score_curve"].map(lambda v: bool(curve_of(v)))]
    found = threshold(group, target) if len(rows) else None
    if found is None:
        return []
    bar, higher = found
    metric = next((m for m in group["metric"] if isinstance(m, str)), "score")
    out = [
        f"Score curves: training cost to reach {target:.0%} of the best {metric} in this group "
        f"({'≥' if higher else '≤'} {fmt_num(bar)}); J ≈ tokens × the timed steps' J/token",
        "",
        "| method | precision | ga | curve points | reached at step | train tokens | train s | J (≈) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows.itertuples():
        points = curve_of(r.score_curve)
        hit = reached(points, bar, higher)
        head = f"| {escape(r.method_label)} | {r.precision} | {r.grad_accum} | {len(points)} |"
        if hit is None:
            out.append(f"{head} not reached (last {fmt_num(points[-1]['score'])}) | - | - | - |")
            continue
        per_token = pd.to_numeric(pd.Series([r.energy_per_token_j]), errors="coerce").iloc[0]
        joules = fmt_num(hit["tokens"] * per_token) if pd.notna(per_token) else "-"
        out.append(f"{head} {hit['step']} | {fmt_num(hit['tokens'])} | {fmt_num(hit['train_s'])} | {joules} |")
    return out


def curve_plot(df: pd.DataFrame, path: Path, group_by: tuple[str, ...]) -> None:
    """Score against training tokens, one line per cell with a curve, one panel per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        (k, g)
        for k, g in df.groupby(list(group_by), sort=False, dropna=False)
        if g["score_curve"].map(curve_of).map(bool).any()
    ]
    if not groups:
        raise ValueError("no record has a score curve (set eval_every on a task, model or method entry)")
    fig, axes = plt.subplots(len(groups), 1, figsize=(7, 3.6 * len(groups)), squeeze=False)
    for ax, (key, group) in zip(axes[:, 0], groups):
        for r in group.itertuples():
            points = curve_of(r.score_curve)
            if points:
                ax.plot(
                    [p["tokens"] for p in points],
                    [p["score"] for p in points],
                    marker="o",
                    label=f"{r.method_label} {r.precision} ga{r.grad_accum}",
                )
        key = key if isinstance(key, tuple) else (key,)
        ax.set_title(" · ".join(str(k) for k in key), fontsize=10)
        ax.set_xlabel("training tokens (warm-up included)")
        ax.set_ylabel(next((m for m in group["metric"] if isinstance(m, str)), "score"))
        ax.legend(fontsize=8, loc="best")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
