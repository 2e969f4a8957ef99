"""`peft-bench run --dry-run` and `peft-bench estimate`: the cells with their estimated training memory, and each
model's parameter count from its config alone (built on the meta device: no weights, no download beyond
config.json)."""

from __future__ import annotations

import json
from typing import Any

from bench.plan.memory import ConfigCache, estimate_spec
from bench.suite.spec import RunSpec


def model_sizes(specs: list[RunSpec], configs: ConfigCache) -> list[tuple[str, int | None, str]]:
    """(model label, parameters or None, why unknown) per distinct model entry and model kind of the suite."""
    from bench import registry
    from bench.models.loading import auto_class, build_random

    seen: dict[tuple[str, str, str], tuple[str, int | None, str]] = {}
    for spec in specs:
        task = registry.load("task", spec.task)
        key = (spec.model, json.dumps(spec.model_options, sort_keys=True), task.model_kind)
        if key in seen:
            continue
        label = f"{spec.model} ({task.model_kind})"
        try:
            cfg = configs.get(spec, task.model_kind, task.num_labels)
            model = build_random(auto_class(task.model_kind), cfg, "meta", "bfloat16", 0)
            seen[key] = (label, sum(p.numel() for p in model.parameters()), "")
        except Exception as exc:  # offline hub, unknown architecture, ...
            seen[key] = (label, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}")
    return list(seen.values())


def estimate_lines(specs: list[RunSpec], configs: ConfigCache) -> list[str]:
    """One line per cell: run id and its memory estimate, GiB (or why there is none)."""

    width = max(len(s.run_id) for s in specs)
    head = "weights + grads + optimizer + activations + loss backward = total (training, before CUDA context)"
    lines = [f"{'cell':{width}s}  {head}"]
    for spec in specs:
        est, why = estimate_spec(spec, configs)
        if est is None:
            lines.append(f"{spec.run_id:{width}s}  no estimate: {why}")
            continue
        parts = [est.weights_mib, est.gradients_mib, est.optimizer_mib, est.activations_mib, est.transient_mib]
        scale, unit = (1024, "GiB") if est.total_mib >= 1024 else (1, "MiB")  # a unit that shows the digits
        figures = " + ".join(f"{p / scale:.2f}" for p in parts)
        basis = "" if est.activations_basis == "counted" else f"  (activations by {est.activations_basis})"
        lines.append(f"{spec.run_id:{width}s}  {figures} = {est.total_mib / scale:.2f} {unit}{basis}")
    return lines


def print_dry_run(suite: Any, specs: list[RunSpec], with_estimates: bool = True) -> None:
    configs = ConfigCache()
    if with_estimates:
        print("\n".join(estimate_lines(specs, configs)))
    else:
        for spec in specs:
            print(spec.run_id)
    print(f"{len(specs)} cells in suite {suite.name!r} ({suite.path}, sha256 {suite.content_hash})")
    print("models (parameters from the config, no weights loaded):")
    for label, n, why in model_sizes(specs, configs):
        print(f"  {label}: {n:,} parameters ({n / 1e9:.2f} B)" if n is not None else f"  {label}: unknown ({why})")
