"""Records -> one pandas row per cell (latest attempt), ratios against `full`, and exports read back."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.results.store import latest_by_run_id

METRICS = [
    "trainable_params",
    "total_params",
    "trainable_pct",
    "train_peak_nvml_process_mib",
    "train_peak_nvml_device_minus_baseline_mib",
    "train_peak_nvml_mib",
    "peak_nvml_mib",
    "peak_nvml_process_mib",
    "baseline_nvml_mib",
    "suite_baseline_nvml_mib",
    "torch_peak_allocated_mib",
    "torch_peak_reserved_mib",
    "peak_rss_mib",
    "train_peak_rss_mib",
    "train_rss_growth_mib",
    "estimate_total_mib",
    "estimate_weights_mib",
    "tokens_per_s",
    "padded_tokens_per_s",
    "samples_per_s",
    "step_time_p50_s",
    "step_time_p90_s",
    "step_time_spread",
    "other_cpu_share",
    "load_avg_1m",
    "noisy",
    "mfu",
    "hfu",
    "checkpoint_bytes",
    "score_before",
    "score_after",
    "majority_baseline_after",
    "score_paraphrase_before",
    "score_paraphrase_after",
    "forgetting_delta",
    "energy_j",
    "train_energy_j",
    "energy_per_token_j",
    "final_loss",
]
LM_EVAL_PREFIX = "lm_eval_"  # lm-evaluation-harness figures: lm_eval_<task>_<metric>_<before|after>
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
ENV += ["cpu_model", "cpu_capability", "cpu_native_bf16"]


def _info(rec: dict[str, Any], section: str, key: str, default: Any = None) -> Any:
    return (rec.get(section) or {}).get(key, default)


def _distributed_text(value: Any) -> str:
    """`ddp2`, `fsdp4`, `fsdp8x2` over two nodes: the run id's part (DistributedOptions.label; the report reads
    records, not the suite package); "" for one process."""
    if not isinstance(value, dict):
        return ""
    nodes = value.get("nnodes", 1)
    return f"{value.get('strategy', 'ddp')}{value.get('nproc', 1)}" + (f"x{nodes}" if nodes > 1 else "")


def _compile_text(value: Any) -> str:
    """The `compile` axis as a report cell: '' (off), 'on', or its options `backend=aot_eager`."""
    if not value:
        return ""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "on"
    return "on"


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
        "grad_ckpt": bool(spec.get("grad_ckpt", False)),
        "attn": spec.get("attn") or "",
        "compile": _compile_text(spec.get("compile")),
        "distributed": _distributed_text(spec.get("distributed")),
        "seed": spec.get("seed", 0),
        "batch_size": spec.get("batch_size"),
        "steps": spec.get("steps"),
        "status": rec.get("status"),
        "error": (rec.get("error") or {}).get("message"),
    }
    row.update({k: m.get(k) for k in METRICS})
    row.update({k: (rec.get("timings") or {}).get(k) for k in TIMINGS})
    row.update(
        {
            "metric": _info(rec, "task_info", "metric"),
            "synthetic": _info(rec, "task_info", "synthetic"),
            "higher_is_better": _info(rec, "task_info", "higher_is_better", True),
            "random_weights": _info(rec, "model_info", "random_weights"),
            "emulated": bool(_info(rec, "dtypes", "emulated") or env.get("emulated_precision")),
            "started_at": rec.get("started_at"),
            "suite_hash": spec.get("suite_hash"),
            "spec_hash": rec.get("spec_hash"),
            "checkpoint_error": (rec.get("checkpoint") or {}).get("error"),
            "score_curve": json.dumps(rec["score_curve"]) if rec.get("score_curve") else None,
            "nonfinite": ",".join(
                sorted(k for k, why in (rec.get("missing_reason") or {}).items() if str(why).startswith("not finite"))
            )
            or None,
        }
    )
    row.update({k: env.get(k) if k not in ("torch", "transformers", "peft") else packages.get(k) for k in ENV})
    # every other figure of the record too (lm-eval's, each method's own, inference...): one column each
    row.update({k: v for k, v in sorted(m.items()) if k not in row and isinstance(v, (int, float, str, type(None)))})
    if row["gpu_name"] is None:
        row["gpu_name"] = env.get("nvml_gpu_name")
    return row


def records_to_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Latest attempt per run_id, one row each, in first-seen order; every metric of the records a column."""
    records = list(latest_by_run_id(list(records)).values())
    rows = [flatten(r) for r in records]
    columns = list(flatten({"run_id": ""}).keys())
    extra = sorted({k for r in rows for k in r} - set(columns))
    df = pd.DataFrame(rows, columns=[*columns, *extra])
    specs: dict[str, Any] = {}
    for rec in records:
        specs.update(rec.get("metric_specs") or {})
    df.attrs["metric_specs"] = specs  # the plugins' metric rows, for the report's per-group tables
    return df


TEXT_COLUMNS = [
    "run_id",
    "suite",
    "model",
    "task",
    "method",
    "method_label",
    "precision",
    "attn",
    "compile",
    "distributed",
    "status",
    "error",
    "metric",
    "started_at",
    "suite_hash",
    "spec_hash",
    "checkpoint_error",
    "nonfinite",
    "score_curve",
    *ENV,
]


def read_export(path: str | Path) -> pd.DataFrame:
    """Read back a CSV or JSON export written by `report` into the same DataFrame."""
    path = Path(path)
    if path.suffix == ".json":
        df = pd.read_json(path, orient="records", dtype=False)  # JSON keeps its own types
    else:
        df = pd.read_csv(path, dtype={c: object for c in TEXT_COLUMNS})
    columns = list(flatten({"run_id": ""}).keys())  # an export older than a column: that column is unknown (NaN)
    df = df.reindex(columns=[*columns, *[c for c in df.columns if c not in columns]])
    for axis in ("attn", "compile", "distributed"):  # a default (model's attention, not compiled, one process): ""
        df[axis] = df[axis].fillna("")
    return df


MEMORY_COLUMNS = (
    "train_peak_nvml_process_mib",
    "train_peak_nvml_device_minus_baseline_mib",  # where NVML cannot attribute memory to the cell's processes
    "peak_nvml_mib",
    "torch_peak_allocated_mib",
    "train_peak_rss_mib",
    "peak_rss_mib",
)


def memory_column(df: pd.DataFrame) -> str:
    """The headline memory figure present in these records: the training peak of the cell's process tree
    (NVML); older records' device peak; torch's allocator; on CPU the tree's RSS peak during training (older
    records: the process's lifetime peak RSS)."""
    for col in MEMORY_COLUMNS[:-1]:
        if df[col].notna().any():
            return col
    return MEMORY_COLUMNS[-1]


def with_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """Add ratios against the `full` cell of the same model/task/precision/grad_accum/grad_ckpt (success only)."""
    keys = ["model", "task", "precision", "grad_accum", "grad_ckpt", "attn", "compile", "distributed", "seed"]
    base = df[(df["method"] == "full") & (df["status"] == "success")]
    out = df.copy()
    for col in ("mem_x", "speed_x", "ckpt_x", "score_delta"):
        out[col] = math.nan
    mem = memory_column(df)
    if base.empty:
        return with_axis_costs(out, mem)
    cols = ["tokens_per_s", "checkpoint_bytes", "score_after", mem]
    merged = out[keys].merge(base[keys + cols].drop_duplicates(keys), on=keys, how="left", suffixes=("", "_full"))
    ok = (out["status"] == "success").to_numpy()
    num = lambda s: pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)  # noqa: E731
    out["mem_x"] = num(out[mem]) / num(merged[mem])
    out["speed_x"] = num(out["tokens_per_s"]) / num(merged["tokens_per_s"])
    out["ckpt_x"] = num(out["checkpoint_bytes"]) / num(merged["checkpoint_bytes"])
    out["score_delta"] = num(out["score_after"]) - num(merged["score_after"])
    for col in ("mem_x", "speed_x", "ckpt_x", "score_delta"):
        out.loc[~ok, col] = math.nan
    return with_axis_costs(out, mem)


RATIO_AXES = ("precision", "grad_accum", "grad_ckpt", "attn", "compile", "distributed", "seed")
AXIS_COSTS = {  # prefix -> (the axis, its baseline value): the same method with only that axis changed
    "gc": ("grad_ckpt", False),
    "prec": ("precision", "fp32"),
    "attn": ("attn", ""),
    "comp": ("compile", ""),
    "dist": ("distributed", ""),
}


def with_axis_costs(df: pd.DataFrame, mem: str) -> pd.DataFrame:
    """What one axis costs a method: memory and speed of a gradient-checkpointing cell against the same method
    without it (`gc_mem_x`, `gc_speed_x`), of a bf16/fp16/quantized cell against the same method in fp32
    (`prec_mem_x`, `prec_speed_x`); NaN where that baseline did not run or did not succeed."""
    num = lambda s: pd.to_numeric(s, errors="coerce").to_numpy(dtype=float)  # noqa: E731
    out = df
    for prefix, (axis, base_value) in AXIS_COSTS.items():
        keys = [k for k in ("model", "task", "method_label", *RATIO_AXES) if k != axis]
        base = df[(df[axis] == base_value) & (df["status"] == "success")][
            [*keys, mem, "tokens_per_s", "step_time_p50_s"]
        ]
        merged = df[keys].merge(base.drop_duplicates(keys), on=keys, how="left", suffixes=("", "_base"))
        keep = ((df[axis] != base_value) & (df["status"] == "success")).to_numpy()
        out[f"{prefix}_mem_x"] = np.where(keep, num(df[mem]) / num(merged[mem]), np.nan)
        out[f"{prefix}_speed_x"] = np.where(keep, num(df["tokens_per_s"]) / num(merged["tokens_per_s"]), np.nan)
        if prefix == "comp":  # the steps after which compiling paid for itself (none while it is not faster)
            saved = num(merged["step_time_p50_s"]) - num(df["step_time_p50_s"])
            overhead = num(df["compile_overhead_s"]) if "compile_overhead_s" in df else np.full(len(df), np.nan)
            with np.errstate(divide="ignore", invalid="ignore"):
                out["compile_payoff_steps"] = np.where(keep & (saved > 0), np.ceil(overhead / saved), np.nan)
    return out
