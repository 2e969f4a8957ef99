"""A rough estimate of a suite's wall time on this machine, printed before it runs.

Per cell: the duration of an earlier record of the same run id in the out dir when there is one; otherwise a
FLOP count (6 or 4 x parameters per trained token, 2 x per evaluated token) divided by this machine's measured fp32
matmul speed (a 0.3 s probe) times efficiencies calibrated on small transformers, plus per-step and start-up costs.
bf16 cells on a CPU without native bf16 will be `unsupported` and cost about a second.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from bench.suite.spec import RunSpec

# Calibrated on the smoke suite (MiniLM-L6 and a tiny Llama) on a 2-core CPU: achieved / probe FLOP/s
TRAIN_EFFICIENCY = 0.9  # re-measured 2026-12-02 on the shipped suites (smoke, teacher, distill, own-data)
EVAL_EFFICIENCY = 0.85
NATIVE_BF16_SPEEDUP = 1.6  # bf16 cells on a CPU with AMX / AVX512-BF16 (measured 1.6-2x)
STEP_OVERHEAD_S = 0.006  # Python per optimizer step: what tiny models' steps cost
CELL_OVERHEAD_S = 1.2  # fork/launch, model load, data, save
FULL_GRADIENT_METHODS = ("full", "prune", "distill", "lowrank")  # weight gradients for (nearly) every weight
RUNNER_OVERHEAD_S = 6.0  # runner start and the fork server's imports
TYPICAL_FILL = {"tweet-sentiment": 0.8, "toy-cls": 0.75, "reverse": 0.6}  # computed tokens / seq_len
LM_EVAL_S = 7.0  # lm-eval's task index (built once per cell) and its wrapper, per cell
GENERATING = {"reverse": ("length", 4), "sft": ("max_new_tokens", 32), "facts": (None, 2)}  # greedy tokens per item
MODEL_RANGE = (0.5, 2.0)  # what the FLOP model was off by on the shipped suites (measured, README)
RECORD_RANGE = (0.8, 1.25)  # an earlier run of the same cell on the same machine


@dataclass
class Forecast:
    seconds: float
    from_records: int
    modelled: int
    probe_gflops: float | None
    low: float = 0.0  # the range: records within RECORD_RANGE, modelled cells within MODEL_RANGE
    high: float = 0.0

    def line(self, n_cells: int) -> str:
        how = []
        if self.from_records:
            how.append(f"{self.from_records} from earlier records")
        if self.modelled:
            how.append(f"{self.modelled} modelled from a {self.probe_gflops:,.0f} GFLOP/s fp32 probe")
        span = f"~{_clock(self.seconds)} ({_clock(self.low)} – {_clock(self.high)})"
        return f"forecast wall time on this machine: {span} for {n_cells} cells ({'; '.join(how)})"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def probe_gflops(seconds: float = 0.3) -> float:
    """fp32 matmul speed of this machine, as the cells will see it (same threads)."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    for _ in range(3):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 512**3 * n / (time.perf_counter() - t0) / 1e9


def cell_seconds(spec: RunSpec, params: int, native_bf16: bool, gflops: float, student: float = 1.0) -> float:
    """Training (6N FLOPs per token for methods with weight gradients everywhere, 4N for the others, +2N for the
    forward gradient checkpointing recomputes; a distilled student of `student` of the depth trains that share and
    its teacher adds a 2N forward), evaluations (2N per token), per-step Python overhead and the cell's start-up."""
    fill = TYPICAL_FILL.get(spec.task, 1.0)
    tokens = spec.steps * spec.batch_size * spec.seq_len * fill
    speed = gflops * 1e9 * (NATIVE_BF16_SPEEDUP if native_bf16 and spec.precision == "bf16" else 1.0)
    per_token = (6.0 if spec.method in FULL_GRADIENT_METHODS else 4.0) + (2.0 if spec.grad_ckpt else 0.0)
    teacher = 2.0 if spec.method == "distill" and spec.method_options.get("alpha", 0.5) > 0 else 0.0
    train = (per_token * student + teacher) * params * tokens / (speed * TRAIN_EFFICIENCY)
    n_eval = spec.task_options.get("n_eval", 128)
    key, default = GENERATING.get(spec.task, (None, 1))
    gen = spec.task_options.get(key, default) if key else default
    n_evals = (2 if spec.eval_before else 1) + (spec.steps // spec.eval_every - 1 if spec.eval_every else 0)
    evals = 2.0 * params * n_eval * spec.seq_len * fill * gen * n_evals
    extra = LM_EVAL_S if spec.lm_eval else 0.0
    return CELL_OVERHEAD_S + extra + train + evals / (speed * EVAL_EFFICIENCY) + spec.steps * STEP_OVERHEAD_S


class Model:
    """The FLOP model of this machine (one probe), with model sizes read from configs once."""

    def __init__(self):
        from bench.env.cpu import facts

        self.gflops = probe_gflops()
        self.native = facts().native_bf16
        self.sizes: dict[tuple[str, str, str, int], int] = {}

    def seconds(self, spec: RunSpec) -> float:
        from bench import registry
        from bench.models.loading import parameter_count

        emulated = spec.precision in ("bf16", "int8", "nf4") and not spec.allow_emulated_precision
        if spec.device != "cuda" and not self.native and emulated:
            return 1.0  # refused as `unsupported` at once
        task = registry.load("task", spec.task)
        labels = task.num_labels or 2  # a head read from the user's data: its size hardly moves the count
        key = (spec.model, json.dumps(spec.model_options, sort_keys=True), task.model_kind, labels)
        if key not in self.sizes:
            self.sizes[key] = parameter_count(spec.model, task.model_kind, labels, spec.model_options)[0] or 0
        return cell_seconds(spec, self.sizes[key], self.native, self.gflops, self.student(spec, key))

    def student(self, spec: RunSpec, key: tuple[str, str, str, int]) -> float:
        """The share of the model's blocks a distilled student keeps (1 for every other method)."""
        kept = spec.method_options.get("student_layers") if spec.method == "distill" else None
        if not kept:
            return 1.0
        from bench.models.loading import load_config
        from bench.models.sources import resolve_source

        try:
            cfg = load_config(resolve_source(spec.model, spec.model_options), key[2], key[3], spec.model_options)[0]
            return min(1.0, kept / cfg.num_hidden_layers)
        except Exception:  # noqa: BLE001 - a config out of reach: the whole model
            return 1.0


def calibration(model: Model, earlier: dict[str, dict[str, Any]], limit: int = 20) -> float:
    """Median of actual / modelled over earlier successful records of this out dir (1 without any), clamped to
    0.25-4: the model's error on this machine and these cells, applied to the cells not run yet."""
    ratios = []
    for rec in list(earlier.values())[:limit]:
        duration = rec.get("timings", {}).get("duration_s") or rec.get("duration_s")
        if rec.get("status") != "success" or not duration or not rec.get("spec"):
            continue
        try:
            modelled = model.seconds(RunSpec.from_dict(rec["spec"]))
        except Exception:  # noqa: BLE001 - a record of a plugin no longer installed: not a calibration point
            continue
        if modelled > 0:
            ratios.append(duration / modelled)
    if not ratios:
        return 1.0
    ratios.sort()
    return min(4.0, max(0.25, ratios[len(ratios) // 2]))


def forecast(specs: list[RunSpec], earlier: dict[str, dict[str, Any]]) -> Forecast:
    """The suite's wall time: earlier durations of the same cells where known, else the FLOP model calibrated on
    the out dir's other records (probing only if needed), with its range."""

    def duration(spec: RunSpec) -> float | None:
        rec = earlier.get(spec.run_id) or {}
        return rec.get("duration_s") or (rec.get("timings") or {}).get("duration_s")

    known = [d for s in specs if (d := duration(s))]
    rest = [s for s in specs if not duration(s)]
    total = sum(known) + RUNNER_OVERHEAD_S
    low, high = sum(known) * RECORD_RANGE[0] + RUNNER_OVERHEAD_S, sum(known) * RECORD_RANGE[1] + RUNNER_OVERHEAD_S
    gflops = None
    if rest:
        model = Model()
        gflops, scale = model.gflops, calibration(model, earlier)
        for spec in rest:
            seconds = model.seconds(spec) * scale
            total, low, high = total + seconds, low + seconds * MODEL_RANGE[0], high + seconds * MODEL_RANGE[1]
    return Forecast(total, len(known), len(rest), gflops, low, high)
