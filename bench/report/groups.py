"""Every measured figure reaches the report: a record's metrics outside the main table's groups (inference,
utilisation, each method's own: distill, prune, lowrank, and any a plugin declares) get one table per group, headed
and footnoted from the metric table the record carries (`metric_specs`), so a new metric needs no report code."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report.markdown import escape, fmt_bytes, fmt_num
from bench.results.metrics import MetricSpec, table

# groups the main table already summarises (their every figure is in the CSV, JSON and HTML exports)
MAIN_GROUPS = ("params", "speed", "memory", "estimate", "energy", "score", "noise")
TITLES = {
    "inference": "Inference as deployed (greedy generation: base, unmerged adapter, merged copy)",
    "utilisation": "FLOPs and utilisation",
    "distill": "Distillation",
    "prune": "Pruning",
    "lowrank": "Low-rank factorization",
    "compile": "torch.compile (the compile axis)",
    "distributed": "Distributed cells (every rank's figures are in the record's `ranks`)",
}


def metric_table(df: pd.DataFrame) -> dict[str, MetricSpec]:
    """The core metric rows plus those the records carry for their plugins (kept in `df.attrs`)."""
    return table(df.attrs.get("metric_specs"))


def fmt_value(value: Any, spec: MetricSpec) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if spec.fmt == "int":
        return f"{int(value):,}"
    if spec.fmt == "bytes":
        return fmt_bytes(value)
    if spec.fmt == "pct":
        return f"{fmt_num(value)}%"
    return fmt_num(value)


def _header(spec: MetricSpec) -> str:
    unit = spec.unit and spec.unit not in spec.header and spec.fmt != "bytes"  # bytes print their own unit
    return spec.header + (f" ({spec.unit})" if unit else "")


def row_label(r: dict[str, Any], vary: set[str]) -> str:
    """The cell in a group table: method, and the axes that tell its rows apart."""
    extra = " gc" if r.get("grad_ckpt") is True else ""
    extra += f" attn {r['attn'] or 'default'}" if "attn" in vary else ""
    extra += f" compile {r['compile'] or 'off'}" if "compile" in vary else ""
    extra += f" {r['distributed'] or '1 process'}" if "distributed" in vary else ""
    return escape(f"{r['method_label']}{extra}" + (f" s{r['seed']}" if "seed" in vary else ""))


def group_tables(group: pd.DataFrame, specs: dict[str, MetricSpec]) -> list[str]:
    """Markdown lines: one table per metric group outside the main table with a value in this model x task group,
    rows = the cells that have one, each column footnoted with its definition."""
    ok = group[group["status"] == "success"]
    out: list[str] = []
    groups = dict.fromkeys(s.group for s in specs.values() if s.group not in MAIN_GROUPS)
    for name in groups:
        cols = [s for s in specs.values() if s.group == name and s.name in ok and ok[s.name].notna().any()]
        if not cols:
            continue
        rows = ok[ok[[s.name for s in cols]].notna().any(axis=1)]
        vary = {c for c in ("seed", "attn", "compile", "distributed") if c in rows and rows[c].nunique() > 1}
        out += [f"{TITLES.get(name, name.capitalize())}:", ""]
        out.append("| method | precision | ga | " + " | ".join(escape(_header(s)) for s in cols) + " |")
        out.append("|---|---|---|" + "---|" * len(cols))
        for r in rows.to_dict("records"):
            values = " | ".join(fmt_value(r[s.name], s) for s in cols)
            out.append(f"| {row_label(r, vary)} | {r['precision']} | {r['grad_accum']} | {values} |")
        out += ["", *[f"- {escape(_header(s))}: {s.doc}" for s in cols], ""]
    return out
