"""`peft-bench selfcheck`: does the harness distort what it measures?

For each method, the same cell runs (a) as the plain loop of bench/selfcheck/bareloop.py (no harness code) in its own
process, watched by the NVML sampler, and (b) through the harness (spawn launcher, as `peft-bench run`). Printed:
step-time ratio bare/harness (target >= 0.95), and on a GPU the training peak of the harness's process tree against
the bare process's own peak (device peak minus what others held before it; target within 5%) and energy per token.
On a GPU it exits 1 below target; on a CPU it reports without failing (shared-core timings are too noisy to gate).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.suite.spec import RunSpec

BARELOOP = Path(__file__).with_name("bareloop.py")  # run as a script: the bare process imports no bench code
STEP_TARGET, MEMORY_TARGET_PCT = 0.95, 5.0
GPU_DEFAULTS = {"model": "llama-1b-shape", "precision": "bf16", "steps": 16, "batch_size": 8, "seq_len": 1024}
CPU_DEFAULTS = {"model": "tiny-llama", "precision": "fp32", "steps": 40, "batch_size": 8, "seq_len": 64, "rounds": 3}
METHODS = {"lora": {"r": 16, "alpha": 32}, "ia3": {}, "full": {}}


def cell_spec(
    model: str, method: str, precision: str, steps: int, batch_size: int, seq_len: int, device: str
) -> RunSpec:
    return RunSpec(
        suite="selfcheck",
        model=model,
        task="random-lm",
        method=method,
        precision=precision,
        grad_accum=1,
        batch_size=batch_size,
        steps=steps,
        warmup_steps=max(1, steps // 4),
        seq_len=seq_len,
        lr=1e-5 if method == "full" else 1e-4,
        device=device,
        eval_before=False,
        save_checkpoint=False,
        task_options={"n_train": 4 * batch_size, "n_eval": 2},
        method_options=METHODS[method],
    )


def bare_job(spec: RunSpec) -> dict[str, Any]:
    from bench.models.configs import CONFIGS

    return {
        "config": CONFIGS[spec.model],
        "method": spec.method,
        **spec.method_options,
        "precision": spec.precision,
        "batch_size": spec.batch_size,
        "seq_len": spec.seq_len,
        "steps": spec.steps,
        "warmup_steps": spec.warmup_steps,
        "lr": spec.lr,
        "device": spec.device,
        "cuda_alloc_conf": spec.cuda_alloc_conf,  # the same allocator setting the harness gives its cells
    }


def run_bare(spec: RunSpec, backend: Any = None) -> dict[str, Any]:
    """The bare loop in a fresh process (its memory figures are its own), watched by NVML when there is one."""
    from bench.trackers import nvml

    sampler = nvml.Sampler(backend, 0)
    sampler.take_baseline()
    env = dict(os.environ)
    if spec.device == "cuda" and spec.cuda_alloc_conf:
        env["PYTORCH_CUDA_ALLOC_CONF"] = spec.cuda_alloc_conf
    proc = subprocess.Popen(
        [sys.executable, str(BARELOOP), json.dumps(bare_job(spec))],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    sampler.start(proc.pid)
    out, _ = proc.communicate(timeout=spec.timeout_s)
    sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"bare loop failed with exit code {proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    if backend is not None and sampler.timeline.t:
        tl = sampler.timeline
        res["own_peak_mib"] = max(tl.used) - (sampler.baseline_mib or 0.0)
        window = tl.window(res["train_timed_start_unix"], res["train_timed_end_unix"])
        if window["energy_j"] is not None:
            res["energy_per_token_j"] = window["energy_j"] / (len(res["step_times_s"]) * res["tokens_per_step"])
    return res


def run_harness(spec: RunSpec, out: Path) -> dict[str, Any]:
    from bench.execution import LocalOptions
    from bench.results import store
    from bench.runner import RunOptions, run_specs

    run_specs(
        [spec],
        RunOptions(out_dir=out, force=True, local=LocalOptions(launcher="spawn", allow_busy_gpu=True)),
        progress=lambda s: None,
    )
    rec = store.read_records(out).records[-1]
    if rec["status"] != "success":
        raise RuntimeError(f"harness cell {rec['status']}: {(rec.get('error') or {}).get('message')}")
    return rec


def compare(bare: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    m = rec["metrics"]
    bare_p50 = statistics.median(bare["step_times_s"])
    row = {
        "bare_step_p50_s": bare_p50,
        "harness_step_p50_s": m["step_time_p50_s"],
        "step_ratio": bare_p50 / m["step_time_p50_s"],
        "harness_distinct_batch_shapes": m.get("distinct_batch_shapes"),
    }
    if bare.get("own_peak_mib") is not None and m.get("train_peak_nvml_process_mib"):
        row.update(
            bare_own_peak_mib=bare["own_peak_mib"],
            harness_train_peak_process_mib=m["train_peak_nvml_process_mib"],
            memory_diff_pct=100 * (m["train_peak_nvml_process_mib"] - bare["own_peak_mib"]) / bare["own_peak_mib"],
            bare_torch_peak_allocated_mib=bare.get("torch_peak_allocated_mib"),
            harness_torch_peak_allocated_mib=m.get("torch_peak_allocated_mib"),
            bare_energy_per_token_j=bare.get("energy_per_token_j"),
            harness_energy_per_token_j=m.get("energy_per_token_j"),
        )
    return row


def selfcheck(out: Path, methods: list[str], settings: dict[str, Any], device: str) -> dict[str, Any]:
    from bench.trackers import nvml

    backend, reason = nvml.open_backend()
    rows = {}
    for method in methods:
        spec = cell_spec(
            settings["model"],
            method,
            settings["precision"],
            settings["steps"],
            settings["batch_size"],
            settings["seq_len"],
            device,
        )
        rounds = []
        for i in range(settings.get("rounds", 1)):  # alternating: a drift of the machine hits both sides alike
            bare = run_bare(spec, backend if device == "cuda" else None)
            rounds.append(compare(bare, run_harness(spec, out / method / f"round{i}")))
        rows[method] = {**rounds[-1], "step_ratio": statistics.median(r["step_ratio"] for r in rounds)}
        rows[method]["round_step_ratios"] = [r["step_ratio"] for r in rounds]
    return {"device": device, **settings, "nvml": reason or "ok", "methods": rows}


def verdicts(res: dict[str, Any]) -> list[str]:
    """One line per figure, ending OK / BELOW TARGET; the return code comes from these."""
    lines = []
    for method, row in res["methods"].items():
        ok = row["step_ratio"] >= STEP_TARGET
        lines.append(
            f"{method}: step time bare/harness {row['step_ratio']:.3f} (bare {row['bare_step_p50_s']:.4f} s, harness "
            f"{row['harness_step_p50_s']:.4f} s; target >= {STEP_TARGET}) {'OK' if ok else 'BELOW TARGET'}"
        )
        if row.get("memory_diff_pct") is not None:  # gated for full fine-tuning, reported for the others
            ok = abs(row["memory_diff_pct"]) <= MEMORY_TARGET_PCT
            verdict = ("OK" if ok else "BELOW TARGET") if method == "full" else "(reported)"
            lines.append(
                f"{method}: training peak harness tree {row['harness_train_peak_process_mib']:,.0f} MiB vs bare own "
                f"{row['bare_own_peak_mib']:,.0f} MiB ({row['memory_diff_pct']:+.1f}%, target within "
                f"{MEMORY_TARGET_PCT:g}%) {verdict}"
            )
    return lines


def main(args: Any) -> int:
    from bench.trackers import nvml

    device = "cuda" if nvml.open_backend()[0] is not None else "cpu"
    settings = dict(GPU_DEFAULTS if device == "cuda" else CPU_DEFAULTS)
    for key in ("model", "precision", "steps", "batch_size", "seq_len", "rounds"):
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    methods = args.methods.split(",") if args.methods else (list(METHODS) if device == "cuda" else ["lora"])
    res = selfcheck(Path(args.out), methods, settings, device)
    Path(args.out, "selfcheck.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    lines = verdicts(res)
    print("\n".join(lines))
    if device != "cuda":
        print("(CPU: reported, not gated; timings on a shared CPU are too noisy to fail on)")
        return 0
    return 1 if any(line.endswith("BELOW TARGET") for line in lines) else 0
