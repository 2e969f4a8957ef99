"""Repeated cells (`repeats: N` or a seed axis): one row per configuration with mean ± sample standard deviation
over seeds, and whether each method's score is distinguishable from the best one's within that spread."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.report.frame import memory_column
from bench.report.markdown import escape, fmt_bytes, fmt_delta, fmt_num, fmt_ratio, memory_header

KEYS = ["method_label", "precision", "grad_accum", "grad_ckpt"]


def _mean_sd(values: pd.Series) -> tuple[float, float]:
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def aggregate(group: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: runs, successes, and mean / sd of the figures over the successful seeds."""
    mem = memory_column(group)
    rows = []
    for key, g in group.groupby(KEYS, sort=False, dropna=False):
        ok = g[g["status"] == "success"]
        row: dict[str, Any] = dict(zip(KEYS, key))
        row.update(
            runs=len(g),
            ok=len(ok),
            trainable_params=ok["trainable_params"].max(),
            trainable_pct=ok["trainable_pct"].max(),
        )
        row["checkpoint_bytes"] = ok["checkpoint_bytes"].max()
        for col, name in (
            (mem, "memory"),
            ("tokens_per_s", "tps"),
            ("score_after", "score"),
            ("score_before", "before"),
            ("step_time_p50_s", "step"),
        ):
            row[f"{name}_mean"], row[f"{name}_sd"] = _mean_sd(ok[col])
        row["is_full"] = bool((g["method"] == "full").all())
        rows.append(row)
    return against_full(pd.DataFrame(rows))


def against_full(agg: pd.DataFrame) -> pd.DataFrame:
    """Means against the `full` configuration with the same precision, grad accum and checkpointing: memory and
    tokens/s as ratios of the means, the score as the difference of the means."""
    agg = agg.copy()
    for col in ("mem_x", "speed_x", "score_delta"):
        agg[col] = math.nan
    for i, r in agg.iterrows():
        base = agg[agg["is_full"] & (agg[KEYS[1:]] == r[KEYS[1:]]).all(axis=1)]
        if base.empty:
            continue
        b = base.iloc[0]
        agg.loc[i, "mem_x"] = r["memory_mean"] / b["memory_mean"] if b["memory_mean"] else math.nan
        agg.loc[i, "speed_x"] = r["tps_mean"] / b["tps_mean"] if b["tps_mean"] else math.nan
        agg.loc[i, "score_delta"] = r["score_mean"] - b["score_mean"]
    return agg


def _pm(mean: float, sd: float) -> str:
    return "-" if math.isnan(mean) else f"{fmt_num(mean)} ± {fmt_num(sd)}"


def versus_best(agg: pd.DataFrame, higher_is_better: bool) -> list[str]:
    """Per row: `best`, `≈ best` when the gap is within the two spreads (sd of this row + sd of the best), or Δ."""
    scored = agg[agg["score_mean"].notna()]
    if scored.empty:
        return ["-"] * len(agg)
    best = scored.loc[scored["score_mean"].idxmax() if higher_is_better else scored["score_mean"].idxmin()]
    out = []
    for i, r in agg.iterrows():
        if math.isnan(r["score_mean"]):
            out.append("-")
        elif i == best.name:
            out.append("best")
        elif abs(r["score_mean"] - best["score_mean"]) <= r["score_sd"] + best["score_sd"]:
            out.append("≈ best (within spread)")
        else:
            out.append(f"{r['score_mean'] - best['score_mean']:+.3g}")
    return out


def repeats_table(group: pd.DataFrame) -> str:
    from tabulate import tabulate

    agg = aggregate(group)
    mem = memory_column(group)
    higher = bool(group["higher_is_better"].dropna().iloc[0]) if group["higher_is_better"].notna().any() else True
    vary = [c for c in KEYS[1:] if agg[c].nunique() > 1]
    headers = ["method", *vary, "runs ok", "trainable (% of total)", f"{memory_header(mem)} mean ± sd"]
    headers += ["tokens/s mean ± sd", "step p50 s mean", "checkpoint", "score before mean ± sd"]
    headers += ["score after mean ± sd", "vs best"]
    has_full = agg["speed_x"].notna().any()
    headers += ["mem × full", "speed × full", "Δ score vs full"] if has_full else []
    rows = []
    for (_, r), verdict in zip(agg.iterrows(), versus_best(agg, higher)):
        trainable = (
            "-"
            if pd.isna(r["trainable_params"])
            else f"{int(r['trainable_params']):,} ({fmt_num(r['trainable_pct'])}%)"
        )
        rows.append(
            [escape(r["method_label"]), *[escape(r[c]) for c in vary], f"{r['ok']}/{r['runs']}", trainable]
            + [_pm(r["memory_mean"], r["memory_sd"]), _pm(r["tps_mean"], r["tps_sd"]), fmt_num(r["step_mean"])]
            + [fmt_bytes(r["checkpoint_bytes"]), _pm(r["before_mean"], r["before_sd"])]
            + [_pm(r["score_mean"], r["score_sd"]), verdict]
            + ([fmt_ratio(r["mem_x"]), fmt_ratio(r["speed_x"]), fmt_delta(r["score_delta"])] if has_full else [])
        )
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
