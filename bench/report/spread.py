"""`compare` with repeats on both sides: cells that differ only by seed (`--sN` in the run id) are compared as
configurations, by their mean over seeds, and a speed, memory or score change counts only when it is beyond the
tolerance and beyond the spread (the two sample standard deviations added)."""

from __future__ import annotations

import math
import re
from typing import Any

import pandas as pd

SEED = re.compile(r"--s\d+$")


def config_of(run_id: str) -> str:
    return SEED.sub("", run_id)


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = [x for x in values if not math.isnan(x)]
    if len(v) < 2:
        return math.nan, math.nan
    mean = sum(v) / len(v)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1))


def repeated(old: pd.DataFrame, new: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """config -> (its OLD cells, its NEW cells) for configurations with two or more successful seeds on each side."""
    out = {}
    ok_old, ok_new = old[old["status"] == "success"], new[new["status"] == "success"]
    keys_old, keys_new = ok_old["run_id"].map(config_of), ok_new["run_id"].map(config_of)
    for key in sorted(set(keys_old) & set(keys_new)):
        a, b = ok_old[keys_old == key], ok_new[keys_new == key]
        if len(a) >= 2 and len(b) >= 2:
            out[key] = (a, b)
    return out


def spread_moves(key: str, a: pd.DataFrame, b: pd.DataFrame, mem: str, tol: float | None, score_tol: float, move: Any):
    """Moves of one repeated configuration: means compared, beyond tolerance and beyond the spread."""
    num = lambda s: [float(x) for x in pd.to_numeric(s, errors="coerce")]  # noqa: E731
    out = []
    figures = [(mem, True, "rel"), ("tokens_per_s", False, "rel")] if tol is not None else []
    figures.append(("score_after", None, "abs"))
    higher = bool(a["higher_is_better"].iloc[0]) if pd.notna(a["higher_is_better"].iloc[0]) else True
    for col, worse_if_up, kind in figures:
        (ma, sa), (mb, sb) = _mean_sd(num(a[col])), _mean_sd(num(b[col]))
        if math.isnan(ma) or math.isnan(mb) or (kind == "rel" and ma == 0):
            continue
        delta = mb - ma
        beyond_tol = abs(delta / ma) > tol if kind == "rel" else abs(delta) > score_tol
        if not beyond_tol:
            continue
        within = abs(delta) <= sa + sb
        change = (f"{100 * delta / ma:+.1f}%" if kind == "rel" else f"{delta:+.4g}") + f" (mean of {len(a)}/{len(b)})"
        if within:
            change += f", within the spread ±{sa + sb:.3g}"
        worse = (delta > 0) == worse_if_up if worse_if_up is not None else (delta < 0) == higher
        out.append(move(f"{key} (seeds)", col, ma, mb, change, worse and not within))
    return out
