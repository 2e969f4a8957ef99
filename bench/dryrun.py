"""`peft-bench run --dry-run`: the cells, and each model's parameter count from its config alone (built on the
meta device: no weights, no download beyond config.json)."""

from __future__ import annotations

import json
from typing import Any

from bench.spec import RunSpec


def model_sizes(specs: list[RunSpec]) -> list[tuple[str, int | None, str]]:
    """(model label, parameters or None, why unknown) per distinct model entry and model kind of the suite."""
    from bench import models, registry

    seen: dict[tuple[str, str, str], tuple[str, int | None, str]] = {}
    for spec in specs:
        task = registry.load("task", spec.task)
        key = (spec.model, json.dumps(spec.model_options, sort_keys=True), task.model_kind)
        if key not in seen:
            n, why = models.parameter_count(spec.model, task.model_kind, task.num_labels, spec.model_options)
            seen[key] = (f"{spec.model} ({task.model_kind})", n, why)
    return list(seen.values())


def print_dry_run(suite: Any, specs: list[RunSpec]) -> None:
    for spec in specs:
        print(spec.run_id)
    print(f"{len(specs)} cells in suite {suite.name!r} ({suite.path}, sha256 {suite.content_hash})")
    print("models (parameters from the config, no weights loaded):")
    for label, n, why in model_sizes(specs):
        print(f"  {label}: {n:,} parameters ({n / 1e9:.2f} B)" if n is not None else f"  {label}: unknown ({why})")
