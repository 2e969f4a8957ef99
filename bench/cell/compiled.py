"""`compile` axis: torch.compile of the model as the method left it (in place, `module.compile`: parameters, state
dict and checkpoint paths unchanged). The compile lands in the warm-up steps, which no headline figure counts;
the record says what it cost (`compile_overhead_s`: the warm-up steps' time beyond that many steady steps) and
dynamo's own counters over the training phase (graph breaks, graphs, frames compiled)."""

from __future__ import annotations

from typing import Any

from bench.errors import Unsupported


def compile_model(model: Any, option: bool | dict[str, Any]) -> None:
    """Compile `model` in place with the suite's options (`true`: torch.compile's defaults)."""
    opts = {} if option is True else {k: v for k, v in dict(option).items() if v is not None}
    try:
        model.compile(**opts)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise Unsupported(f"torch.compile({opts}) cannot compile this model here: {exc}") from exc


def dynamo_counters() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {
        "graph_breaks": sum(counters["graph_break"].values()),
        "compiled_graphs": int(counters["stats"]["unique_graphs"]),
        "dynamo_frames": int(counters["frames"]["total"]),
    }


def compile_metrics(before: dict[str, int], stats: Any) -> dict[str, Any]:
    """Compile cost and dynamo's counters over the training phase (`before`: the counters when it began)."""
    from bench.cell.train import percentile

    after = dynamo_counters()
    out: dict[str, Any] = {k: after[k] - before.get(k, 0) for k in after}
    p50 = percentile(stats.step_times_s, 50)
    out["compile_warmup_s"] = sum(stats.warmup_times_s)
    out["compile_overhead_s"] = max(0.0, sum(stats.warmup_times_s) - len(stats.warmup_times_s) * p50) if p50 else None
    return out
