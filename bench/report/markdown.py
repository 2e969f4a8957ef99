"""Markdown for the report: number formats, one table per (model, task), the environment header, notes for cells
that did not succeed, and footnotes saying how each column is measured."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.report.frame import memory_column
from bench.results.metrics import table
from bench.results.numbers import _missing, fmt_bytes, fmt_delta, fmt_num, fmt_ratio  # noqa: F401 - re-exported

SPECS = table()


def memory_header(mem: str) -> str:
    """The headline memory column's header, from the metric table (bench/results/metrics.py)."""
    return SPECS[mem].header


def is_true(x: Any) -> bool:
    return x is True or (isinstance(x, str) and x.lower() == "true") or (isinstance(x, (int, float)) and x == 1)


def escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _cell(row: pd.Series, value: str) -> str:
    return value if row["status"] == "success" else "—"


def _memory_text(r: pd.Series, mem: str) -> str:
    fallback = "train_peak_nvml_device_minus_baseline_mib"
    if mem == "train_peak_nvml_process_mib" and pd.isna(r[mem]) and pd.notna(r.get(fallback)):
        mem = fallback  # this cell's process memory is unknown: the labelled device figure stands in
    text = fmt_num(r[mem]) + (" (device - baseline)" if mem == fallback else "")
    if mem in ("train_peak_nvml_process_mib", "peak_nvml_mib") and pd.notna(r["torch_peak_allocated_mib"]):
        text = f"{text} ({fmt_num(r['torch_peak_allocated_mib'])})"
    if r["status"] == "oom" and pd.notna(r[mem]):  # the peak seen before running out is data too
        return f"{text} at OOM"
    return text if r["status"] == "success" else "—"


def estimate_text(r: pd.Series) -> str:
    """Estimate vs measured: on GPU the estimated total vs torch's peak allocation in training; on CPU what training
    adds (estimate without the weights) vs the RSS growth during training."""
    if r["status"] not in ("success", "oom") or pd.isna(r["estimate_total_mib"]):
        return "—" if r["status"] != "success" else "-"
    if pd.notna(r["torch_peak_allocated_mib"]):
        return f"{fmt_num(r['estimate_total_mib'])} / {fmt_num(r['torch_peak_allocated_mib'])}"
    added = r["estimate_total_mib"] - (r["estimate_weights_mib"] if pd.notna(r["estimate_weights_mib"]) else 0)
    return f"{fmt_num(added)} / {fmt_num(r['train_rss_growth_mib'])}"


def _axis_text(r: pd.Series, col: str) -> str:
    if col == "precision" and r["emulated"]:
        return f"{escape(r[col])} (emulated)"
    if col == "grad_ckpt":
        return "on" if r[col] else "off"
    if col in ("attn", "compile", "distributed"):
        return escape(r[col] or {"attn": "default", "compile": "off", "distributed": "1 process"}[col])
    return escape(r[col])


def group_table(df: pd.DataFrame) -> str:
    """One markdown table (GitHub style): rows = methods (+ the axes that vary in the group)."""
    from tabulate import tabulate

    mem = memory_column(df)
    axes = ("precision", "grad_accum", "grad_ckpt", "attn", "compile", "distributed", "seed")
    vary = [c for c in axes if df[c].nunique() > 1]
    if df["emulated"].any() and "precision" not in vary:
        vary.insert(0, "precision")
    has_ratio = df["speed_x"].notna().any() or df["score_delta"].notna().any()
    has_energy = df["energy_per_token_j"].notna().any()
    has_estimate = df["estimate_total_mib"].notna().any()
    gpu_estimate = df["torch_peak_allocated_mib"].notna().any()
    headers = ["method", *[{"grad_accum": "grad accum", "grad_ckpt": "grad ckpt"}.get(c, c) for c in vary]]
    headers += ["status", "trainable (% of total)", memory_header(mem), "tokens/s", "step p50 s"]
    headers += ["J/token (train)"] if has_energy else []
    headers += [("est. / torch alloc MiB" if gpu_estimate else "est. / RSS growth MiB (train)")] if has_estimate else []
    headers += ["checkpoint", "score before → after"]
    headers += ["mem × full", "speed × full", "ckpt × full", "Δ score vs full"] if has_ratio else []
    costs = [p for p in COST_HEADERS if f"{p}_speed_x" in df and df[f"{p}_speed_x"].notna().any()]
    headers += [COST_HEADERS[p] for p in costs]
    rows = []
    for _, r in df.iterrows():
        trainable = (
            "-"
            if pd.isna(r["trainable_params"])
            else f"{int(r['trainable_params']):,} ({fmt_num(r['trainable_pct'])}%)"
        )
        status = escape(r["status"]) if r["status"] == "success" else f"**{escape(r['status'])}**"
        row = [escape(r["method_label"]), *[_axis_text(r, c) for c in vary], status, _cell(r, trainable)]
        speed = fmt_num(r["tokens_per_s"]) + (" (noisy)" if is_true(r.get("noisy")) else "")
        row += [_memory_text(r, mem), _cell(r, speed), _cell(r, fmt_num(r["step_time_p50_s"]))]
        row += [_cell(r, fmt_num(r["energy_per_token_j"]))] if has_energy else []
        row += [estimate_text(r)] if has_estimate else []
        row += [
            _cell(
                r, "**not saved**" if isinstance(r.get("checkpoint_error"), str) else fmt_bytes(r["checkpoint_bytes"])
            ),
            _cell(r, f"{fmt_num(r['score_before'])} → {fmt_num(r['score_after'])}"),
        ]
        if has_ratio:
            row += [fmt_ratio(r["mem_x"]), fmt_ratio(r["speed_x"]), fmt_ratio(r["ckpt_x"]), fmt_delta(r["score_delta"])]
        row += [_cost_text(r, p) for p in costs]
        rows.append(row)
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


COST_HEADERS = {
    "gc": "grad ckpt on / off: mem ×, speed ×",
    "prec": "vs fp32: mem ×, speed ×",
    "attn": "vs default attention: mem ×, speed ×",
    "comp": "compiled vs not: mem ×, speed × (pays off after)",
    "dist": "vs one process: mem ×, speed ×",
}


def _cost_text(r: pd.Series, prefix: str) -> str:
    """What this cell's checkpointing (or precision) costs against the same method without it."""
    mem, speed = r.get(f"{prefix}_mem_x"), r.get(f"{prefix}_speed_x")
    if pd.isna(speed):
        return ""
    text = f"{fmt_ratio(mem)}, {fmt_ratio(speed)}"
    if prefix == "comp":
        steps = r.get("compile_payoff_steps")
        text += f" (after {int(steps):,} steps)" if pd.notna(steps) else " (never: not faster)"
    return text


def group_remarks(group: pd.DataFrame) -> str:
    """The line under a group heading: the metric, its baseline, and whether scores mean anything."""
    metric = next((m for m in group["metric"] if isinstance(m, str)), "score")
    baseline = group["majority_baseline_after"].dropna()
    text = f"score: {metric}" + (f"; majority-class baseline {fmt_num(baseline.iloc[0])}" if len(baseline) else "")
    if group["random_weights"].eq(True).any():
        text += " (random weights: scores are NOT meaningful; memory, speed, parameters and checkpoints are real)"
    elif group["synthetic"].eq(True).any():
        text += " (synthetic task: shows that training moves the score, not language quality)"
    return text


def failure_notes(group: pd.DataFrame) -> list[str]:
    """Why each cell that did not succeed did not (the reason an unsupported cell gives, an error's message)."""
    out = []
    for _, r in group[group["status"] != "success"].iterrows():
        reason = escape(str(r["error"] or "no message")[:300])
        out.append(f"- `{escape(r['method_label'])}` {r['precision']} ga{r['grad_accum']}: **{r['status']}**: {reason}")
    return out


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
    if df["cpu_model"].notna().any():
        native = first("cpu_native_bf16")
        lines.append(f"- CPU: {first('cpu_model')} (torch capability {first('cpu_capability')}; native bf16: {native})")
    foreign = pd.to_numeric(df["suite_baseline_nvml_mib"], errors="coerce").max()
    if pd.notna(foreign) and foreign > 0:
        lines.append(
            f"- GPU memory in use before the suite started (other processes): {fmt_num(foreign)} MiB; device "
            "figures include it, process-tree figures do not"
        )
    counts = df["status"].value_counts()
    lines.append("- status: " + ", ".join(f"{k} {counts[k]}" for k in sorted(counts.index)))
    return lines


FOOTNOTES = [
    "trainable: parameters with requires_grad after the method is applied (4-bit weights counted unpacked), "
    "and their share of all parameters.",
    "train peak MiB: the peak NVML memory of the cell's process tree during the training phase (sampled every "
    "~10 ms by the supervising process; CUDA context included, other processes excluded); torch's max allocated "
    'during training in parentheses. "(device - baseline)": NVML could not attribute memory to the cell\'s '
    "processes (no per-process figure, or none of its PIDs listed), so the device's training peak minus what it held "
    "just before the cell stands in. Older records: the device's peak over the whole cell. Without a GPU: the "
    "process tree's peak RSS during training (includes the Python and library baseline).",
    "tokens/s: real (non-padding) tokens of the timed steps divided by their time; warm-up steps excluded; GPU "
    'clocks read after torch.cuda.synchronize(). step p50: median optimizer-step time. "(noisy)": other '
    "processes took more than 15% of the machine's CPU during the timed steps, or step p90/p50 > 1.5; the "
    "record's notes give the figures, and speed ratios against it mean little.",
    "J/token (train): NVML energy during the timed steps / their tokens (whole-cell energy is `energy_j` in the "
    "records).",
    "est. / measured: the memory estimate made from the config and method before training (bench/plan/memory.py) "
    "against the measurement: on GPU the estimated total vs torch's peak allocation in training; on CPU what "
    "training adds (gradients, optimizer state, activations) vs the growth of the process tree's RSS in training.",
    "checkpoint: bytes of the weight files the method saves (adapter weights only for PEFT methods).",
    "score: the task's headline metric on the same held-out split before and after training.",
    "× full / Δ: against the `full` cell with the same model, task, precision, grad accum, checkpointing and seed.",
    "grad ckpt on / off: a gradient-checkpointing cell against the same method without it (what checkpointing "
    "costs in memory and speed); vs fp32: a bf16/fp16/quantized cell against the same method in fp32; vs default "
    "attention: an `attn` cell against the same method with the model's default attention implementation; vs one "
    "process: a `distributed` cell (all its ranks: the tree's memory, the whole cell's tokens/s) against the same "
    "method in one process.",
    "(emulated): bf16 on a CPU without native bf16, run because the suite opted in; its speed measures the emulation.",
    "cells that did not succeed show their status instead of numbers; the notes under each table say why.",
]
