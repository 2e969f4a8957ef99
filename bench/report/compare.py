"""`peft-bench compare OLD NEW`: did a change of version or commit move the numbers?

OLD and NEW are out dirs, results.jsonl files, or JSON/CSV exports of `peft-bench report`. Cells are lined up by
run id (latest attempt). Beyond tolerance: memory up or tokens/s down by more than `--tolerance` (relative),
the score worse by more than `--score-tolerance` (absolute, in the task's direction), any change of trainable
parameters or checkpoint bytes (deterministic figures), a cell that succeeded before and does not now. Prints a
markdown table of what moved; exits 1 on a regression, 0 otherwise. `--deterministic` leaves out memory and
tokens/s, which depend on the machine: CI compares a fresh run with the committed `reports/smoke.csv` that way.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.frame import memory_column, read_export, records_to_frame
from bench.report.markdown import escape, fmt_num, is_true


@dataclass
class Move:
    run_id: str
    figure: str
    old: Any
    new: Any
    change: str
    regression: bool


def load_frame(source: str | Path) -> pd.DataFrame:
    path = Path(source)
    if path.suffix in (".json", ".csv") and path.is_file():
        return read_export(path)
    from bench.results.store import read_records

    read = read_records(path)
    for warning in read.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return records_to_frame(read.records)


def _num(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


class BadArgument(ValueError):
    pass


def parse_tolerance(text: str) -> float:
    """`5%` or `0.05` -> 0.05; a bare number above 1 (`5`: 500%?) and anything else are errors."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise BadArgument(f"--tolerance {text!r}: expected a percentage like 5% or a fraction like 0.05") from None
    if not raw.endswith("%") and value > 1:
        raise BadArgument(f"--tolerance {text!r}: a bare number is a fraction (0.05 = 5%); for {value:g}% write {raw}%")
    if not math.isfinite(value) or value < 0:
        raise BadArgument(f"--tolerance {text!r}: must be a finite value >= 0")
    return value


def _hash(x: Any) -> str | None:
    return x if isinstance(x, str) and x else None


def spec_changes(old: pd.DataFrame, new: pd.DataFrame) -> list[Move]:
    """Cells whose spec differs (by spec_hash; exports without the column are not checked)."""
    if "spec_hash" not in old or "spec_hash" not in new:
        return []
    new_hash = {r["run_id"]: _hash(r["spec_hash"]) for _, r in new.iterrows()}
    out = []
    for _, o in old.iterrows():
        a, b = _hash(o["spec_hash"]), new_hash.get(o["run_id"])
        if a and b and a != b:
            out.append(Move(o["run_id"], "spec", a, b, "the cell's spec changed", False))
    return out


def moves(
    old: pd.DataFrame, new: pd.DataFrame, tolerance: float | None, score_tolerance: float, allow_missing: bool = False
) -> list[Move]:
    """Every figure that moved beyond tolerance, cell by cell (`tolerance` None: memory and tokens/s left out).
    A cell of OLD missing from NEW is a regression unless `allow_missing`."""
    from bench.report.spread import config_of, repeated, spread_moves

    out: list[Move] = []
    mem = memory_column(pd.concat([old, new]))
    new_by_id = {r["run_id"]: r for _, r in new.iterrows()}
    repeats = repeated(old, new)
    for key, (a, b) in repeats.items():
        out += spread_moves(key, a, b, mem, tolerance, score_tolerance, Move)
    for _, o in old.iterrows():
        n = new_by_id.get(o["run_id"])
        if n is None:
            out.append(Move(o["run_id"], "cell", o["status"], "missing", "not in NEW", not allow_missing))
            continue
        if o["status"] == "success" and n["status"] != "success":
            out.append(Move(o["run_id"], "status", "success", n["status"], "no longer succeeds", True))
            continue
        if o["status"] != "success" or n["status"] != "success":
            continue
        if config_of(o["run_id"]) in repeats:  # speed, memory, score compared over seeds; counts cell by cell
            out += _figure_moves(o, n, mem, None, math.inf, counts_only=True)
            continue
        out += _figure_moves(o, n, mem, tolerance, score_tolerance)
    return out


def _figure_moves(
    o: pd.Series, n: pd.Series, mem: str, tol: float | None, score_tol: float, counts_only: bool = False
) -> list[Move]:
    out = []
    nonfinite = n.get("nonfinite")
    for col in nonfinite.split(",") if isinstance(nonfinite, str) else ():
        if col in o and not math.isnan(_num(o[col])):
            out.append(Move(o["run_id"], col, _num(o[col]), "non-finite", "finite -> not finite", True))
    for col in ("trainable_params", "checkpoint_bytes"):
        a, b = _num(o[col]), _num(n[col])
        if not (math.isnan(a) and math.isnan(b)) and a != b:
            out.append(Move(o["run_id"], col, a, b, f"{b - a:+,.0f}", True))
    if counts_only:
        return out
    noisy = [side for side, r in (("OLD", o), ("NEW", n)) if is_true(r.get("noisy"))]
    if noisy and tol is not None:
        out.append(
            Move(
                o["run_id"],
                "tokens_per_s",
                _num(o["tokens_per_s"]),
                _num(n["tokens_per_s"]),
                f"not compared: noisy timing in {' and '.join(noisy)}",
                False,
            )
        )
    for col, worse_if_up in ((mem, True), ("tokens_per_s", False)) if tol is not None else ():
        if col == "tokens_per_s" and noisy:
            continue
        a, b = _num(o[col]), _num(n[col])
        if math.isnan(a) or math.isnan(b) or a == 0:
            continue
        rel = (b - a) / a
        if abs(rel) > tol:
            out.append(Move(o["run_id"], col, a, b, f"{100 * rel:+.1f}%", (rel > 0) == worse_if_up))
    a, b = _num(o["score_after"]), _num(n["score_after"])
    if not (math.isnan(a) or math.isnan(b)) and abs(b - a) > score_tol:
        higher = o.get("higher_is_better", True)
        higher = True if higher is None or (isinstance(higher, float) and math.isnan(higher)) else bool(higher)
        out.append(Move(o["run_id"], "score_after", a, b, f"{b - a:+.4g}", (b < a) == higher))
    return out


def to_markdown(
    found: list[Move], old: str, new: str, tolerance: float | None, score_tolerance: float, fmt: str = "text"
) -> str:
    """The comparison as text (the default) or, `fmt="md"`, as a pull-request comment: a verdict line first,
    the table in a collapsible block."""
    from tabulate import tabulate

    regressions = sum(m.regression for m in found)
    verdict = f"**{regressions} regression(s)**" if regressions else "no regression"
    head = [f"# peft-bench compare: `{old}` → `{new}`", ""]
    if fmt == "md":
        head = [f"### peft-bench compare: {verdict}", "", f"`{old}` → `{new}`", ""]
    speed = "memory and tokens/s not compared" if tolerance is None else f"memory / tokens/s ±{100 * tolerance:g}%"
    head.append(f"tolerance: {speed}, score ±{score_tolerance:g}, counts exact")
    if not found:
        return "\n".join([*head, "", "nothing moved beyond tolerance", ""])
    rows = [
        [escape(m.run_id), m.figure, _fmt(m.old), _fmt(m.new), m.change, "**regression**" if m.regression else "ok"]
        for m in found
    ]
    table = tabulate(
        rows, headers=["cell", "figure", "old", "new", "change", "verdict"], tablefmt="github", disable_numparse=True
    )
    if fmt == "md":
        summary = f"{len(found)} figure(s) moved beyond tolerance, {regressions} of them worse"
        return "\n".join([*head, "", "<details><summary>" + summary + "</summary>", "", table, "", "</details>", ""])
    return "\n".join([*head, "", table, ""])


def _fmt(x: Any) -> str:
    return fmt_num(x) if isinstance(x, (int, float)) else str(x)


def main(args: Any) -> int:
    try:
        tolerance = None if args.deterministic else parse_tolerance(args.tolerance)
    except BadArgument as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    old, new = load_frame(args.old), load_frame(args.new)
    if old.empty or new.empty:
        print(f"error: no records in {args.old if old.empty else args.new}", file=sys.stderr)
        return 2
    changed = spec_changes(old, new)
    if changed and args.deterministic and not args.allow_spec_change:
        print(
            f"error: {len(changed)} cell(s) have another spec in NEW (e.g. {changed[0].run_id}): a deterministic "
            "comparison of different work means nothing; --allow-spec-change compares them anyway",
            file=sys.stderr,
        )
        return 2
    # --deterministic: memory and tokens/s depend on the machine, so they are not compared at all
    found = changed + moves(old, new, tolerance, args.score_tolerance, args.allow_missing)
    print(to_markdown(found, args.old, args.new, tolerance, args.score_tolerance, args.format))
    regressions = [m for m in found if m.regression]
    if regressions:
        print(f"{len(regressions)} regression(s)", file=sys.stderr)
    return 1 if regressions else 0
