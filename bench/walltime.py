"""A rough estimate of a suite's wall time on this machine, printed before it runs.

Per cell: the duration of an earlier record of the same run id in the out dir when there is one; otherwise a
FLOP count (6 x parameters per trained token, 2 x per evaluated token) divided by this machine's measured fp32
matmul speed (a 0.3 s probe) times an efficiency calibrated on small transformers, plus a fixed start-up cost.
bf16 cells on a CPU without native bf16 will be `unsupported` and cost about a second.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.spec import RunSpec

EFFICIENCY = 0.45  # achieved / probe FLOP/s for small transformer training on CPUs (MiniLM, tiny Llama)
CELL_OVERHEAD_S = 2.0  # fork/launch, model load, data, save
RUNNER_OVERHEAD_S = 6.0  # runner start and the fork server's imports
TYPICAL_FILL = {"tweet-sentiment": 0.7, "toy-cls": 0.75, "reverse": 0.6}  # real tokens / seq_len


@dataclass
class Estimate:
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
        return (
            f"estimated wall time on this machine: ~{minutes} min {secs:02d} s for {n_cells} cells ({'; '.join(how)})"
        )


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


def cell_flops(spec: RunSpec, params: int) -> float:
    fill = TYPICAL_FILL.get(spec.task, 1.0)
    train = 6.0 * params * spec.steps * spec.batch_size * spec.seq_len * fill
    n_eval = spec.task_options.get("n_eval", 128)
    gen = spec.task_options.get("length", 4) if spec.task == "reverse" else 1
    evals = 2.0 * params * n_eval * spec.seq_len * fill * gen * (2 if spec.eval_before else 1)
    return train + evals


def estimate(specs: list[RunSpec], earlier: dict[str, dict[str, Any]]) -> Estimate:
    """The suite's wall time: earlier durations where known, else the FLOP model (probing only if needed)."""
    from bench import registry
    from bench.cpuinfo import facts
    from bench.models import parameter_count

    known = [earlier[s.run_id]["duration_s"] for s in specs if (earlier.get(s.run_id) or {}).get("duration_s")]
    rest = [s for s in specs if not (earlier.get(s.run_id) or {}).get("duration_s")]
    total, gflops, sizes = sum(known) + RUNNER_OVERHEAD_S, None, {}
    if rest:
        gflops = probe_gflops()
        emulated = not facts().native_bf16
        for spec in rest:
            if (
                spec.device != "cuda"
                and emulated
                and spec.precision in ("bf16", "int8", "nf4")
                and not spec.allow_emulated_precision
            ):
                total += 1.0
                continue
            task = registry.load("task", spec.task)
            key = (spec.model, task.model_kind)
            if key not in sizes:
                sizes[key] = parameter_count(spec.model, task.model_kind, task.num_labels, spec.model_options)[0] or 0
            total += CELL_OVERHEAD_S + cell_flops(spec, sizes[key]) / (gflops * 1e9 * EFFICIENCY)
    return Estimate(total, len(known), len(rest), gflops)
