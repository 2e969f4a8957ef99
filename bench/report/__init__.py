"""`peft-bench report`: records -> markdown (one table per model and task), CSV/JSON exports and the trade-off
plot. Only the markdown goes to stdout; warnings and `wrote ...` lines go to stderr, so `report OUT > x.md` is
clean. Python API: `load(OUT)` -> DataFrame, `to_markdown(df)`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.report.curves import curve_plot, curve_table
from bench.report.frame import flatten, read_export, records_to_frame, with_ratios
from bench.report.groups import group_tables, metric_table
from bench.report.harness_scores import lm_eval_table
from bench.report.knowledge import knowledge_table
from bench.report.markdown import (
    FOOTNOTES,
    env_header,
    escape,
    failure_notes,
    fmt_bytes,
    fmt_delta,
    fmt_num,
    fmt_ratio,
    group_remarks,
    group_table,
)
from bench.report.repeats import repeats_table
from bench.results.store import latest_by_run_id, read_records

__all__ = [
    "flatten",
    "fmt_bytes",
    "fmt_delta",
    "fmt_num",
    "fmt_ratio",
    "load",
    "read_export",
    "records_to_frame",
    "to_markdown",
    "with_ratios",
]


def load(source: str | Path) -> pd.DataFrame:
    """DataFrame of an out dir or results.jsonl (unreadable lines are named on stderr, records kept)."""
    read = read_records(Path(source))
    for w in read.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return records_to_frame(read.records)


def to_markdown(
    df: pd.DataFrame, group_by: tuple[str, ...] = ("model", "task"), title: str | None = None, target: float = 0.95
) -> str:
    """The whole report: environment header, one table per group (with notes on failures), footnotes."""
    specs = metric_table(df)
    df = with_ratios(df)
    suite = title or (df["suite"].dropna().iloc[0] if df["suite"].notna().any() else "results")
    out = [f"# peft-bench report: {suite}", "", *env_header(df, suite), ""]
    for key, group in df.groupby(list(group_by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        heading = " · ".join(f"{g} `{escape(k)}`" for g, k in zip(group_by, key))
        out += [f"## {heading}", "", group_remarks(group), ""]
        if group["seed"].nunique() > 1:
            n = group["seed"].nunique()
            out += [f"{n} seeds per cell: mean ± sample sd over seeds; `≈ best` = within the spread of the best", ""]
            out += [repeats_table(group), ""]
        else:
            out += [group_table(group), ""]
        notes = failure_notes(group)
        out += [*notes, ""] if notes else []
        extra = group_tables(group, specs)
        out += extra
        knowledge = knowledge_table(group)
        out += [*knowledge, ""] if knowledge else []
        standard = lm_eval_table(group)
        out += [*standard, ""] if standard else []
        curves = curve_table(group, target)
        out += [*curves, ""] if curves else []
    out += ["### How each column is measured", "", *[f"- {n}" for n in FOOTNOTES], ""]
    return "\n".join(out)


def _wrote(path: str) -> None:
    print(f"wrote {path}", file=sys.stderr)


def main(args: Any) -> int:
    """CLI: peft-bench report SOURCE [-o F.md] [--csv F] [--json F] [--plot F.png] [--group-by a,b]."""
    df = load(args.source)
    if df.empty:
        print(f"error: no records in {args.source}", file=sys.stderr)
        return 1
    group_by = tuple(g.strip() for g in args.group_by.split(",") if g.strip())
    bad = [g for g in group_by if g not in df.columns]
    if bad or not group_by:
        valid = ", ".join(GROUP_COLUMNS)
        print(f"error: --group-by {args.group_by!r}: unknown column(s) {bad}; valid: {valid}", file=sys.stderr)
        return 2
    for flag, value in (("--plot", args.plot), ("--plot-curves", args.plot_curves)):
        if value and Path(value).suffix.lower() not in PLOT_SUFFIXES:
            print(f"error: {flag} {value}: give a {' / '.join(PLOT_SUFFIXES)} file", file=sys.stderr)
            return 2
    if args.plot and args.json:
        from bench.report.plot import sidecar_path

        if sidecar_path(args.plot).resolve() == Path(args.json).resolve():
            print(f"error: --json {args.json} is the plot's points file; name the export otherwise", file=sys.stderr)
            return 2
    if not 0 < args.target <= 1:
        print(f"error: --target {args.target}: give a share of the best score in (0, 1], e.g. 0.95", file=sys.stderr)
        return 2
    if args.plot_curves and not df["score_curve"].notna().any():
        print("error: --plot-curves: no record has a score curve (set eval_every on an entry)", file=sys.stderr)
        return 2
    md = to_markdown(df, group_by, target=args.target)
    if args.output:
        _write(args.output, lambda p: p.write_text(md))
    else:
        print(md)
    if args.csv:
        _write(args.csv, lambda p: df.to_csv(p, index=False))
    if args.json:
        _write(args.json, lambda p: df.to_json(p, orient="records", indent=1))
    if args.plot:
        from bench.report.plot import pareto_plot

        _write(args.plot, lambda p: pareto_plot(with_ratios(df), p))
    if args.plot_curves:
        _write(args.plot_curves, lambda p: curve_plot(df, p, group_by))
    if args.html:
        from bench.report.html import write_html

        records = list(latest_by_run_id(read_records(Path(args.source)).records).values())
        _write(args.html, lambda p: write_html(df, records, md, p, group_by))
    return 0


GROUP_COLUMNS = ("model", "task", "method", "precision", "grad_accum", "grad_ckpt", "seed", "suite")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _write(target: str, write: Any) -> None:
    """Write one output; an unwritable path is an OutputError (one line, exit 2), never a traceback."""
    from bench.errors import OutputError

    path = Path(target)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    except OSError as exc:
        raise OutputError(path, exc.strerror or str(exc)) from None
    _wrote(str(path))
