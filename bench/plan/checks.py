"""Before a run: every cell against its model's configuration (bench.models.limits), so a cell that cannot
succeed is refused at suite load, naming the model and its limit, instead of failing inside its subprocess."""

from __future__ import annotations

from typing import Any

from bench import registry
from bench.models import limits
from bench.options import parse_options
from bench.suite.spec import RunSpec


def cell_tokens(spec: RunSpec) -> tuple[int, str]:
    """Positions a cell's sequences take: seq_len plus the virtual tokens a prompt method prepends."""
    method = registry.load_method(spec.method)
    if not method.prepends_tokens:
        return spec.seq_len, f"seq_len {spec.seq_len}"
    cfg, _ = parse_options(method.config_cls, spec.method_options, "method")
    virtual = int(getattr(cfg, "num_virtual_tokens", 0) or 0)
    return spec.seq_len + virtual, f"seq_len {spec.seq_len} + {virtual} virtual tokens"


def config_problems(specs: list[RunSpec], configs: Any = None) -> tuple[list[str], list[str]]:
    """(problems that refuse the suite, notes). A config that cannot be read here (an offline hub) is left to
    the cell, which checks the config it loads."""
    from bench.plan.memory import ConfigCache

    configs = configs or ConfigCache()
    problems: list[str] = []
    notes: list[str] = []
    for spec in specs:
        task = registry.load_task(spec.task)
        try:
            config = configs.get(spec, task.model_kind, task.num_labels)
        except Exception as exc:  # noqa: BLE001 - unreadable here; the cell will say
            notes.append(f"{spec.run_id}: model {spec.model!r} not checked against its config ({type(exc).__name__})")
            continue
        found, note = limit_findings(spec, task.model_kind, config)
        problems += [f"{spec.run_id}: model {spec.model!r}: {p}" for p in found]
        if note:
            notes.append(f"{spec.run_id}: model {spec.model!r}: {note}")
    return sorted(set(problems), key=problems.index), sorted(set(notes), key=notes.index)


def limit_findings(spec: RunSpec, model_kind: str, config: Any) -> tuple[list[str], str | None]:
    """(what refuses the cell, a note) for this cell on a model with this config: a causal-LM task on an encoder
    without a causal mask, sequences past absolute positions; a RoPE model past its positions is a note."""
    tokens, what = cell_tokens(spec)
    causal = limits.causal_problem(config) if model_kind == "causal_lm" else None
    problems = [p for p in (causal, limits.position_problem(config, tokens, what)) if p]
    return problems, limits.position_note(config, tokens, what)
