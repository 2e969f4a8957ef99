"""Records -> pandas DataFrame -> markdown / CSV / JSON tables. Pure functions; the CLI entry is `main`."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.records import latest_by_run_id, read_records

METRICS = [
    "trainable_params",
    "total_params",
    "trainable_pct",
    "peak_nvml_mib",
    "peak_nvml_process_mib",
    "torch_peak_allocated_mib",
    "torch_peak_reserved_mib",
    "peak_rss_mib",
    "tokens_per_s",
    "samples_per_s",
    "step_time_p50_s",
    "step_time_p90_s",
    "checkpoint_bytes",
    "score_before",
    "score_after",
    "majority_baseline_after",
    "forgetting_delta",
    "energy_j",
    "final_loss",
]
TIMINGS = [
    "time_spawn_s",
    "time_import_s",
    "time_model_load_s",
    "time_method_apply_s",
    "time_train_s",
    "time_eval_s",
    "time_save_s",
    "duration_s",
]
ENV = ["device", "gpu_name", "gpu_driver", "cuda", "python", "torch", "transformers", "peft", "git_sha", "hostname"]


def flatten(rec: dict[str, Any]) -> dict[str, Any]:
    spec, m, env = rec.get("spec", {}), rec.get("metrics", {}), rec.get("env", {})
    packages = env.get("packages", {})
    row = {
        "run_id": rec["run_id"],
        "suite": spec.get("suite"),
        "model": spec.get("model"),
        "task": spec.get("task"),
        "method": spec.get("method"),
        "method_label": spec.get("method_label") or spec.get("method"),
        "precision": spec.get("precision"),
        "grad_accum": spec.get("grad_accum"),
        "batch_size": spec.get("batch_size"),
        "steps": spec.get("steps"),
        "status": rec.get("status"),
        "error": (rec.get("error") or {}).get("message"),
    }
    row.update({k: m.get(k) for k in METRICS})
    row.update({k: (rec.get("timings") or {}).get(k) for k in TIMINGS})
    row.update(
        {
            "metric": (rec.get("task_info") or {}).get("metric"),
            "synthetic": (rec.get("task_info") or {}).get("synthetic"),
            "higher_is_better": (rec.get("task_info") or {}).get("higher_is_better", True),
            "started_at": rec.get("started_at"),
            "suite_hash": spec.get("suite_hash"),
        }
    )
    row.update({k: env.get(k) if k not in ("torch", "transformers", "peft") else packages.get(k) for k in ENV})
    if row["gpu_name"] is None:
        row["gpu_name"] = env.get("nvml_gpu_name")
    return row


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Latest attempt per run_id, one row each, in first-seen order."""
    rows = [flatten(r) for r in latest_by_run_id(list(records)).values()]
    return pd.DataFrame(rows, columns=list(flatten({"run_id": ""}).keys()))


TEXT_COLUMNS = [
    "run_id",
    "suite",
    "model",
    "task",
    "method",
    "method_label",
    "precision",
    "status",
    "error",
    "metric",
    "started_at",
    "suite_hash",
    *ENV,
]


def read_export(path: str | Path) -> pd.DataFrame:
    """Read back a CSV or JSON export written by `report` into the same DataFrame."""
    path = Path(path)
    text = {c: object for c in TEXT_COLUMNS}
    if path.suffix == ".json":
        df = pd.read_json(path, orient="records", dtype=False)  # JSON keeps its own types
    else:
        df = pd.read_csv(path, dtype=text)
    return df


def load(source: str | Path) -> pd.DataFrame:
    """DataFrame of an out dir or results.jsonl (warnings about torn lines are printed, records kept)."""
    read = read_records(Path(source))
    for w in read.warnings:
        print(f"warning: {w}")
    return records_to_frame(read.records)


def _memory_column(df: pd.DataFrame) -> str | None:
    for col in ("peak_nvml_mib", "torch_peak_allocated_mib"):
        if df[col].notna().any():
            return col
    return None


def with_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Add ratios against the `full` cell of the same model/task/precision/grad_accum (success only)."""
    keys = ["model", "task", "precision", "grad_accum"]
    base = df[(df["method"] == "full") & (df["status"] == "success")]
    out = df.copy()
    for col in ("mem_x", "speed_x", "ckpt_x", "score_delta"):
        out[col] = math.nan
    if base.empty:
        return out
    mem = _memory_column(df)
    cols = ["tokens_per_s", "checkpoint_bytes", "score_after"] + ([mem] if mem else [])
    merged = out[keys].merge(base[keys + cols].drop_duplicates(keys), on=keys, how="left", suffixes=("", "_full"))
    ok = (out["status"] == "success").to_numpy()
    num = lambda s: pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)  # noqa: E731
    if mem:
        out["mem_x"] = (num(out[mem]) / num(merged[mem])) * ok
    out["speed_x"] = num(out["tokens_per_s"]) / num(merged["tokens_per_s"])
    out["ckpt_x"] = num(out["checkpoint_bytes"]) / num(merged["checkpoint_bytes"])
    out["score_delta"] = num(out["score_after"]) - num(merged["score_after"])
    for col in ("mem_x", "speed_x", "ckpt_x", "score_delta"):
        out.loc[~ok, col] = math.nan
    return out


# -- formatting ---------------------------------------------------------------------------------------------
def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any) -> str:
    """3 significant digits, thousands separators, '-' for missing."""
    if _missing(x):
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{round(x, digits):,.{digits}f}"


def fmt_bytes(n: Any) -> str:
    if _missing(n):
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{fmt_num(n)} {unit}"
        n /= 1024
    return "-"


def fmt_ratio(x: Any) -> str:
    return "-" if _missing(x) else f"{fmt_num(x)}×"


def fmt_delta(x: Any) -> str:
    return "-" if _missing(x) else f"{'+' if x >= 0 else ''}{fmt_num(x)}"


def escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell(row: pd.Series, value: str) -> str:
    return value if row["status"] == "success" else "—"


def group_table(df: pd.DataFrame) -> str:
    """One markdown table (GitHub style): rows = methods (+ precision / grad_accum where they vary)."""
    from tabulate import tabulate

    mem = _memory_column(df)
    vary = [c for c in ("precision", "grad_accum") if df[c].nunique() > 1]
    has_ratio = df["speed_x"].notna().any() or df["score_delta"].notna().any()
    headers = ["method", *[{"grad_accum": "grad accum"}.get(c, c) for c in vary], "status", "trainable (% of total)"]
    headers += [
        f"peak GPU MiB ({'NVML' if mem == 'peak_nvml_mib' else 'torch alloc'})" if mem else "peak RSS MiB (CPU)"
    ]
    headers += ["tokens/s", "step p50 s", "checkpoint", "score before → after"]
    if has_ratio:
        headers += ["mem × full" if mem else None, "speed × full", "ckpt × full", "Δ score vs full"]
        headers = [h for h in headers if h]
    rows = []
    for _, r in df.iterrows():
        pct = r["trainable_pct"]
        trainable = "-" if pd.isna(r["trainable_params"]) else f"{int(r['trainable_params']):,} ({fmt_num(pct)}%)"
        memory = r[mem] if mem else r["peak_rss_mib"]
        if mem == "peak_nvml_mib" and pd.notna(r["torch_peak_allocated_mib"]):
            mem_text = f"{fmt_num(memory)} ({fmt_num(r['torch_peak_allocated_mib'])})"
        else:
            mem_text = fmt_num(memory)
        status = escape(r["status"]) if r["status"] == "success" else f"**{escape(r['status'])}**"
        if r["status"] == "oom" and pd.notna(memory):  # the peak seen before running out is data too
            mem_text = f"{mem_text} at OOM"
        elif r["status"] != "success":
            mem_text = "—"
        row = [
            escape(r["method_label"]),
            *[escape(r[c]) for c in vary],
            status,
            _cell(r, trainable),
            mem_text,
            _cell(r, fmt_num(r["tokens_per_s"])),
            _cell(r, fmt_num(r["step_time_p50_s"])),
            _cell(r, fmt_bytes(r["checkpoint_bytes"])),
            _cell(r, f"{fmt_num(r['score_before'])} → {fmt_num(r['score_after'])}"),
        ]
        if has_ratio:
            if mem:
                row.append(fmt_ratio(r["mem_x"]))
            row += [fmt_ratio(r["speed_x"]), fmt_ratio(r["ckpt_x"]), fmt_delta(r["score_delta"])]
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def env_header(df: pd.DataFrame, suite_name: str | None = None) -> list[str]:
    first = lambda col: next((str(v) for v in df[col] if pd.notna(v) and v != ""), "-")  # noqa: E731
    dates = [d for d in df["started_at"] if isinstance(d, str)]
    hashes = sorted({h for h in df["suite_hash"] if isinstance(h, str) and h})
    lines = [
        f"- suite: `{suite_name or first('suite')}` (sha256 {', '.join(hashes) or '-'}), {len(df)} cells, "
        f"run {min(dates)[:10] if dates else '-'} … {max(dates)[:10] if dates else '-'}",
        f"- device: {first('device')}; GPU: {first('gpu_name')}; driver: {first('gpu_driver')}; CUDA: {first('cuda')}",
        f"- python {first('python')}, torch {first('torch')}, transformers {first('transformers')}, "
        f"peft {first('peft')}; git {first('git_sha')[:12]}; host {first('hostname')}",
    ]
    counts = df["status"].value_counts()
    lines.append("- status: " + ", ".join(f"{k} {counts[k]}" for k in sorted(counts.index)))
    return lines


FOOTNOTES = [
    "trainable: parameters with requires_grad after the method is applied (4-bit weights counted unpacked), "
    "and their share of all parameters.",
    "peak GPU MiB: device used memory sampled by NVML every ~10 ms in the parent over the whole cell "
    "(CUDA context included); torch's max allocated in parentheses. Without a GPU: the cell process's peak RSS "
    "(includes the Python and library baseline).",
    "tokens/s: non-padding tokens of the timed steps divided by their time; warm-up steps excluded; "
    "GPU clocks read after torch.cuda.synchronize(). step p50: median optimizer-step time.",
    "checkpoint: bytes on disk of what the method saves (adapter weights only for PEFT methods).",
    "score: the task's headline metric on the same held-out split before and after training.",
    "× full / Δ: against the `full` cell with the same model, task, precision and grad accum (when the suite has one).",
    "cells that did not succeed show their status (oom / timeout / unsupported / failed / canceled) "
    "instead of numbers.",
]


def to_markdown(df: pd.DataFrame, group_by: tuple[str, ...] = ("model", "task"), title: str | None = None) -> str:
    """The whole report: environment header, one table per group, footnotes."""
    df = with_ratios(df)
    suite = title or (df["suite"].dropna().iloc[0] if df["suite"].notna().any() else "results")
    out = [f"# peft-bench report: {suite}", "", *env_header(df, suite), ""]
    for key, group in df.groupby(list(group_by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        heading = " · ".join(f"{g} `{escape(k)}`" for g, k in zip(group_by, key))
        metric = next((m for m in group["metric"] if isinstance(m, str)), "score")
        synth = (
            " (synthetic task: shows that training moves the score, not language quality)"
            if group["synthetic"].eq(True).any()
            else ""
        )
        baseline = group["majority_baseline_after"].dropna()
        base_text = f"; majority-class baseline {fmt_num(baseline.iloc[0])}" if len(baseline) else ""
        out += [f"## {heading}", "", f"score: {metric}{base_text}{synth}", "", group_table(group), ""]
    out += ["### How each column is measured", "", *[f"- {n}" for n in FOOTNOTES], ""]
    return "\n".join(out)


def main(args: Any) -> int:
    """CLI: peft-bench report SOURCE [-o F.md] [--csv F] [--json F] [--plot F.png] [--group-by a,b]."""
    df = load(args.source)
    if df.empty:
        print(f"error: no records in {args.source}")
        return 1
    md = to_markdown(df, tuple(args.group_by.split(",")))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(md)
        print(f"wrote {args.output}")
    else:
        print(md)
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.json:
        df.to_json(args.json, orient="records", indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        from bench.plot import pareto_plot

        pareto_plot(with_ratios(df), args.plot)
        print(f"wrote {args.plot} (+ {Path(args.plot).with_suffix('.json').name})")
    return 0
