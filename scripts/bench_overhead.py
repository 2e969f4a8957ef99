#!/usr/bin/env python3
"""Harness overhead on this machine, in one run:

(a) the bare training loop of bench/selfcheck/bareloop.py (plain PyTorch + peft, no harness code) on the same tiny cell;
(b) the same cell through the harness with each launcher (spawn, fork-server): tokens/s ratio harness/bare;
(c) 10 one-step tiny cells per launcher: per-cell overhead = cell wall - (train + eval), and the whole
    `peft-bench run` wall per cell, runner start-up included.

Usage: python scripts/bench_overhead.py [--cells 10] [--steps 200] [--json out.json]
Run it on an otherwise idle machine: OpenMP threads of concurrent processes distort CPU timings badly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

CELL = {
    "model": "tiny-llama",
    "task": {"name": "random-lm", "n_train": 256, "n_eval": 16},
    "precision": "fp32",
    "grad_accum": 1,
    "batch_size": 8,
    "seq_len": 64,
    "lr": 0.001,
    "seed": 0,
    "device": "cpu",
}


LORA = {"name": "lora", "r": 8, "alpha": 16}


def bare_tokens_per_s(steps: int) -> float:
    """The plain loop of bench/selfcheck/bareloop.py (no harness code), in its own process, on the same cell as CELL."""
    from bench.selfcheck import run_bare
    from bench.suite.spec import RunSpec

    fixed = {k: v for k, v in CELL.items() if k != "task"}
    spec = RunSpec(
        suite="overhead",
        task=CELL["task"]["name"],
        method=LORA["name"],
        steps=steps,
        warmup_steps=10,
        timeout_s=600,
        task_options={k: v for k, v in CELL["task"].items() if k != "name"},
        method_options={k: v for k, v in LORA.items() if k != "name"},
        **fixed,
    )
    res = run_bare(spec)
    return res["tokens_per_step"] * len(res["step_times_s"]) / sum(res["step_times_s"])


def run_suite(tmp: Path, name: str, methods: list, steps: int, launcher: str) -> tuple[float, list[dict]]:
    suite = {
        "name": name,
        "defaults": {
            **CELL,
            "steps": steps,
            "warmup_steps": 0 if steps == 1 else 10,
            "timeout_s": 600,
            "save_checkpoint": True,
        },
        "matrix": {"method": methods},
    }
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite))
    out = tmp / f"out-{name}-{launcher}"
    t0 = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out), "--launcher", launcher],
        check=True,
        capture_output=True,
    )
    wall = time.perf_counter() - t0
    recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(r["status"] == "success" for r in recs), [r.get("error") for r in recs]
    return wall, recs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=10)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved bare/harness repetitions (medians)")
    ap.add_argument("--json")
    args = ap.parse_args()
    result: dict = {}
    speeds: dict[str, list[float]] = {"bare": [], "spawn": [], "fork-server": []}
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for i in range(args.rounds):  # interleaved, so drift in machine speed hits all three alike
            speeds["bare"].append(bare_tokens_per_s(args.steps))
            for launcher in ("spawn", "fork-server"):
                _, (rec,) = run_suite(tmp / f"r{i}", "speed", [LORA], args.steps, launcher)
                speeds[launcher].append(rec["metrics"]["tokens_per_s"])
        bare = statistics.median(speeds["bare"])
        result["bare_tokens_per_s"] = bare
        result["tokens_per_s_rounds"] = speeds
        for launcher in ("spawn", "fork-server"):
            tps = statistics.median(speeds[launcher])
            methods = [{**LORA, "label": f"lora-{i}"} for i in range(args.cells)]
            wall, recs = run_suite(tmp, "overhead", methods, 1, launcher)
            over = [r["duration_s"] - r["timings"]["time_train_s"] - r["timings"]["time_eval_s"] for r in recs]
            paired = [h / b for h, b in zip(speeds[launcher], speeds["bare"])]
            result[launcher] = {
                "harness_tokens_per_s": tps,
                "ratio_harness_over_bare": statistics.median(paired),
                "paired_ratios": paired,
                "overhead_median_s": statistics.median(over),
                "overhead_s": over,
                "cell_wall_median_s": statistics.median(r["duration_s"] for r in recs),
                "suite_wall_s": wall,
                "suite_wall_per_cell_s": wall / args.cells,
                "time_spawn_median_s": statistics.median(r["timings"]["time_spawn_s"] for r in recs),
                "time_import_median_s": statistics.median(r["timings"]["time_import_s"] for r in recs),
            }
    print(
        f"bare loop: {bare:,.0f} tokens/s (median of {args.rounds}; all: "
        + ", ".join(f"{k} {[round(v) for v in vals]}" for k, vals in speeds.items())
        + ")"
    )
    print(
        f"{'launcher':12s} {'tok/s':>9s} {'ratio*':>6s} {'overhead p50 s':>15s} {'cell wall p50 s':>16s} "
        f"{'suite wall/cell s':>18s}"
    )
    for launcher in ("spawn", "fork-server"):
        r = result[launcher]
        print(
            f"{launcher:12s} {r['harness_tokens_per_s']:9,.0f} {r['ratio_harness_over_bare']:6.3f} "
            f"{r['overhead_median_s']:15.3f} {r['cell_wall_median_s']:16.3f} {r['suite_wall_per_cell_s']:18.3f}"
        )
    print("ratio*: median over rounds of (harness tokens/s / bare tokens/s) measured back to back")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
