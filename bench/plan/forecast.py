"""A rough estimate of a suite's wall time on this machine, printed before it runs.

Per cell: the duration of an earlier record of the same run id in the out dir when there is one; otherwise a
FLOP count (6 or 4 x parameters per trained token, 2 x per evaluated token) divided by this machine's measured fp32
matmul speed (a 0.3 s probe) times efficiencies calibrated on small transformers, plus per-step and start-up costs.
bf16 cells on a CPU without native bf16 will be `unsupported` and cost about a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.suite.spec import RunSpec

# Calibrated on the smoke suite (MiniLM-L6 and a tiny Llama) on a 2-core CPU: achieved / probe FLOP/s
TRAIN_EFFICIENCY = 0.75
EVAL_EFFICIENCY = 0.85
NATIVE_BF16_SPEEDUP = 1.6  # bf16 cells on a CPU with AMX / AVX512-BF16 (measured 1.6-2x)
STEP_OVERHEAD_S = 0.006  # Python per optimizer step: what tiny models' steps cost
CELL_OVERHEAD_S = 1.2  # fork/launch, model load, data, save
FULL_GRADIENT_METHODS = ("full", "prune", "distill", "lowrank")  # weight gradients for (nearly) every weight
RUNNER_OVERHEAD_S = 6.0  # runner start and the fork server's imports
TYPICAL_FILL = {"tweet-sentiment": 0.8, "toy-cls": 0.75, "reverse": 0.6}  # computed tokens / seq_len


@dataclass
class Forecast:
    seconds: float
    from_records: int
    modelled: int
    probe_gflops: float | None

    def line(self, n_cells: int) -> str:
        minutes, secs = divmod(int(round(self.seconds)), 60)
        how = []
        if self.from_records:
            how.append(f"{self.from_records} from earlier records")
        if self.modelled:
            how.append(f"{self.modelled} modelled from a {self.probe_gflops:,.0f} GFLOP/s fp32 probe, rough")
        return f"forecast wall time on this machine: ~{minutes} min {secs:02d} s for {n_cells} cells ({'; '.join(how)})"


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


def cell_seconds(spec: RunSpec, params: int, native_bf16: bool, gflops: float) -> float:
    """Training (6N FLOPs per token for methods with weight gradients everywhere, 4N for the others),
    evaluations (2N per token), per-step Python overhead and the cell's fixed start-up."""
    fill = TYPICAL_FILL.get(spec.task, 1.0)
    tokens = spec.steps * spec.batch_size * spec.seq_len * fill
    speed = gflops * 1e9 * (NATIVE_BF16_SPEEDUP if native_bf16 and spec.precision == "bf16" else 1.0)
    train = (6.0 if spec.method in FULL_GRADIENT_METHODS else 4.0) * params * tokens / (speed * TRAIN_EFFICIENCY)
    n_eval = spec.task_options.get("n_eval", 128)
    gen = spec.task_options.get("length", 4) if spec.task == "reverse" else 1
    evals = 2.0 * params * n_eval * spec.seq_len * fill * gen * (2 if spec.eval_before else 1)
    return CELL_OVERHEAD_S + train + evals / (speed * EVAL_EFFICIENCY) + spec.steps * STEP_OVERHEAD_S


def forecast(specs: list[RunSpec], earlier: dict[str, dict[str, Any]]) -> Forecast:
    """The suite's wall time: earlier durations where known, else the FLOP model (probing only if needed)."""
    from bench import registry
    from bench.env.cpu import facts
    from bench.models.loading import parameter_count

    known = [earlier[s.run_id]["duration_s"] for s in specs if (earlier.get(s.run_id) or {}).get("duration_s")]
    rest = [s for s in specs if not (earlier.get(s.run_id) or {}).get("duration_s")]
    total, gflops, sizes = sum(known) + RUNNER_OVERHEAD_S, None, {}
    if rest:
        gflops = probe_gflops()
        native = facts().native_bf16
        for spec in rest:
            if (
                spec.device != "cuda"
                and not native
                and spec.precision in ("bf16", "int8", "nf4")
                and not spec.allow_emulated_precision
            ):
                total += 1.0
                continue
            task = registry.load("task", spec.task)
            key = (spec.model, task.model_kind)
            if key not in sizes:
                sizes[key] = parameter_count(spec.model, task.model_kind, task.num_labels, spec.model_options)[0] or 0
            total += cell_seconds(spec, sizes[key], native, gflops)
    return Forecast(total, len(known), len(rest), gflops)
