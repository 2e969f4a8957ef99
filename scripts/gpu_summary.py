#!/usr/bin/env python3
"""The closing-note tables of scripts/gpu_check.sh, from its work folder: selfcheck, per-cell phases and headline
figures, estimate vs measured, spawn vs fork server, shapes, inference.

Usage: python scripts/gpu_summary.py WORK_DIR > summary.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tabulate import tabulate

from bench.report.markdown import fmt_num
from bench.results.store import latest_by_run_id, read_records

PHASES = ["import", "load", "data", "apply", "eval_before", "train", "eval_after", "save"]


def table(rows: list[list], headers: list[str]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def records(work: Path, name: str) -> dict[str, dict]:
    return latest_by_run_id(read_records(work / name).records)


def short(run_id: str) -> str:
    return "--".join(run_id.split("--")[2:])


def selfcheck(work: Path) -> list[str]:
    path = work / "selfcheck" / "selfcheck.json"
    if not path.exists():
        return ["## selfcheck", "", f"no {path}", ""]
    res = json.loads(path.read_text())
    rows = [
        [m, fmt_num(r["bare_step_p50_s"]), fmt_num(r["harness_step_p50_s"]), f"{r['step_ratio']:.3f}"]
        + [fmt_num(r.get(k)) for k in ("bare_own_peak_mib", "harness_train_peak_process_mib")]
        + [f"{r['memory_diff_pct']:+.1f}%" if r.get("memory_diff_pct") is not None else "-"]
        + [fmt_num(r.get(k)) for k in ("bare_energy_per_token_j", "harness_energy_per_token_j")]
        for m, r in res["methods"].items()
    ]
    headers = ["method", "bare step s", "harness step s", "bare/harness", "bare own peak MiB", "harness train peak MiB"]
    headers += ["memory diff", "bare J/token", "harness J/token"]
    head = f"## selfcheck ({res['model']}, {res['precision']}, {res['batch_size']} x {res['seq_len']}, {res['device']})"
    return [head, "", table(rows, headers), ""]


def cells(recs: dict[str, dict], title: str) -> list[str]:
    rows, heads = [], []
    for run_id, r in recs.items():
        t, m = r.get("timings", {}), r.get("metrics", {})
        phase = {p: (r.get("phases", {}).get(p) or {}).get("duration_s") for p in PHASES}
        rows.append([short(run_id), r["status"], *[fmt_num(phase[p]) for p in PHASES], fmt_num(t.get("duration_s"))])
        heads.append(
            [short(run_id), fmt_num(m.get("step_time_p50_s")), fmt_num(m.get("tokens_per_s"))]
            + [
                fmt_num(m.get(k))
                for k in ("train_peak_nvml_process_mib", "torch_peak_allocated_mib", "torch_peak_reserved_mib")
            ]
            + [
                fmt_num(m.get(k))
                for k in ("suite_baseline_nvml_mib", "energy_per_token_j", "train_energy_j", "energy_j")
            ]
            + [fmt_num(m.get(k)) for k in ("mfu", "hfu")]
            + [
                fmt_num(m.get("estimate_total_mib")),
                _pct(m.get("estimate_total_mib"), m.get("torch_peak_allocated_mib")),
            ]
        )
    out = [f"## {title}: phases (s)", "", table(rows, ["cell", "status", *PHASES, "cell wall"]), ""]
    h = ["cell", "step p50 s", "tok/s", "train peak tree MiB", "torch alloc", "torch reserved", "foreign MiB"]
    h += ["J/token", "train J", "cell J", "MFU", "HFU", "estimate MiB", "est. vs alloc"]
    return out + [f"## {title}: figures", "", table(heads, h), ""]


def _pct(est: float | None, measured: float | None) -> str:
    return f"{100 * (est - measured) / measured:+.1f}%" if est and measured else "-"


def spawn_vs_fork(spawn: dict[str, dict], fork: dict[str, dict]) -> list[str]:
    rows = []
    for run_id, f in fork.items():
        s = spawn.get(run_id)
        if not s:
            continue
        same = all(s["metrics"].get(k) == f["metrics"].get(k) for k in ("trainable_params", "checkpoint_bytes"))
        curve = s.get("loss_curve") == f.get("loss_curve")
        rows.append(
            [short(run_id), s["status"], f["status"], "yes" if same else "NO", "yes" if curve else "differs"]
            + [fmt_num(s["metrics"].get("step_time_p50_s")), fmt_num(f["metrics"].get("step_time_p50_s"))]
            + [fmt_num(s.get("duration_s")), fmt_num(f.get("duration_s"))]
        )
    headers = ["cell", "spawn", "fork", "params+ckpt equal", "loss curve equal", "step spawn", "step fork"]
    return ["## spawn vs fork server", "", table(rows, headers + ["wall spawn", "wall fork"]), ""]


def shapes(recs: dict[str, dict]) -> list[str]:
    rows = [
        [run_id.split("--")[0], r["status"], fmt_num(r["metrics"].get("total_params"))]
        + [fmt_num(r["metrics"].get(k)) for k in ("train_peak_nvml_process_mib", "tokens_per_s", "step_time_p50_s")]
        + [fmt_num(r["metrics"].get("estimate_total_mib")), fmt_num(r["metrics"].get("torch_peak_allocated_mib"))]
        + [fmt_num((r.get("timings") or {}).get("time_model_load_s")), fmt_num(r.get("duration_s"))]
        for run_id, r in recs.items()
    ]
    headers = ["shape", "status", "params", "train peak MiB", "tok/s", "step s", "estimate MiB", "torch alloc"]
    return ["## shapes (random weights from config.json)", "", table(rows, headers + ["build s", "cell wall s"]), ""]


def inference(recs: dict[str, dict]) -> list[str]:
    rows = []
    for run_id, r in recs.items():
        m = r["metrics"]
        if m.get("inference_tokens_per_s_adapter") is None:
            continue
        rows.append(
            [short(run_id)]
            + [fmt_num(m.get(f"inference_tokens_per_s_{v}")) for v in ("base", "adapter", "merged")]
            + [fmt_num(m.get("merge_logit_max_abs_diff"))]
        )
    return ["## inference (tokens/s)", "", table(rows, ["cell", "base", "adapter", "merged", "merge max abs diff"]), ""]


def main() -> None:
    work = Path(sys.argv[1])
    spawn, fork = records(work, "cells"), records(work, "cells-fork")
    out = [*selfcheck(work), *cells(spawn, "cells (spawn)"), *cells(fork, "cells (fork server)")]
    out += [*spawn_vs_fork(spawn, fork), *shapes(records(work, "shapes")), *inference(spawn)]
    print("\n".join(out))


if __name__ == "__main__":
    main()
