"""Suite -> [RunSpec]: the product of the axes minus `exclude`, plus `include`, with the cross-field checks
(divisibility, method/precision/model combinations, unique run ids) done before any cell runs."""

from __future__ import annotations

import itertools
from dataclasses import fields
from typing import Any

from bench import registry
from bench.errors import SuiteError
from bench.models import sources
from bench.models.precision import QUANTIZED
from bench.suite.defaults import BY_KEY, ENTRY_OVERRIDES
from bench.suite.fingerprint import content_of
from bench.suite.spec import ALL_AXES, RunSpec, method_label
from bench.suite.validate import check_axis_entry


def _entry_name(entry: Any) -> Any:
    return entry["name"] if isinstance(entry, dict) else entry


def _options(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("name", "label")}


def plugin_options(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's own options (not the training overrides it sets for its cells)."""
    return {k: v for k, v in _options(entry).items() if k not in (*ENTRY_OVERRIDES, "distributed")}


def _entry_overrides(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if BY_KEY[k].type is float else v) for k, v in entry.items() if k in ENTRY_OVERRIDES}


def _matches(rule: dict[str, Any], cell: dict[str, Any]) -> bool:
    for axis, want in rule.items():
        entry = cell[axis]
        names = {_entry_name(entry)}
        if axis == "method":
            names.add(entry.get("label") or method_label(entry["name"], plugin_options(entry)))
        wants = want if isinstance(want, list) else [want]
        if not any(_entry_name(w) in names for w in wants):
            return False
    return True


UNSET = object()  # an include rule's axis that the matrix has several values for (None is a value: one process)


def _included(suite: Any, i: int, rule: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    cell = {}
    for a in ALL_AXES:
        if a in rule:
            cell[a] = check_axis_entry(a, rule[a], f"{suite.path}: include[{i}].{a}", problems)
        elif len(suite.axes[a]) == 1:
            cell[a] = suite.axes[a][0]
        else:
            cell[a] = UNSET
    unset = [a for a, v in cell.items() if v is UNSET]
    if unset:
        problems.append(f"{suite.path}: include[{i}]: give {', '.join(unset)} (the matrix has several values)")
    if problems:
        raise SuiteError(problems)
    return cell


def expand(suite: Any) -> list[RunSpec]:
    """The suite's cells in matrix order: product of axes minus `exclude`, plus `include`."""
    cells = [dict(zip(ALL_AXES, combo)) for combo in itertools.product(*(suite.axes[a] for a in ALL_AXES))]
    cells = [c for c in cells if not any(_matches(r, c) for r in suite.exclude)]
    cells += [_included(suite, i, rule) for i, rule in enumerate(suite.include)]
    specs, problems, seen = [], [], set()
    for cell in cells:
        spec = to_spec(suite, cell)
        problems.extend(combination_problems(suite.path, spec))
        if spec.run_id in seen:
            problems.append(f"{suite.path}: two cells share run_id {spec.run_id!r}; give one of the entries a `label`")
        seen.add(spec.run_id)
        specs.append(spec)
    if problems:
        raise SuiteError(sorted(set(problems), key=problems.index))
    return specs


def to_spec(suite: Any, cell: dict[str, Any]) -> RunSpec:
    known = {f.name for f in fields(RunSpec)}
    model, task, method = cell["model"], cell["task"], cell["method"]
    training = {k: v for k, v in suite.defaults.items() if k in known}
    for entry in (model, task, method):
        training.update(_entry_overrides(entry))
    return RunSpec(
        suite=suite.name,
        model=model["name"],
        task=task["name"],
        method=method["name"],
        precision=cell["precision"],
        grad_accum=cell["grad_accum"],
        grad_ckpt=cell["grad_ckpt"],
        attn=cell["attn"],
        compile=cell["compile"],
        distributed=cell["distributed"]
        or next((e["distributed"] for e in (model, task, method) if e.get("distributed")), None),
        seed=cell["seed"],
        model_options=plugin_options(model),
        task_options=plugin_options(task),
        method_options=plugin_options(method),
        method_label=method.get("label") or method_label(method["name"], plugin_options(method)),
        content=content_of(
            model["name"],
            {
                "model_options": (plugin_options(model), ("tokenizer",)),
                "task_options": (plugin_options(task), registry.load_task(task["name"]).config_cls.content_fields),
                "lm_eval": (training.get("lm_eval") or {}, ("include_path",)),
                "method_options": (
                    plugin_options(method),
                    registry.load_method(method["name"]).config_cls.content_fields,
                ),
            },
        ),
        suite_hash=suite.content_hash,
        **{k: v for k, v in training.items() if k != "seed"},
    )


def combination_problems(where: str, spec: RunSpec) -> list[str]:
    out = []
    label = spec.run_id
    if spec.batch_size % spec.grad_accum:
        out.append(
            f"{where}: {label}: batch_size {spec.batch_size} is not divisible by grad_accum "
            f"{spec.grad_accum} (the effective batch is split into equal micro-batches)"
        )
    out.extend(distributed_problems(where, spec))
    if spec.lm_eval and registry.load_task(spec.task).model_kind != "causal_lm":
        out.append(f"{where}: {label}: lm_eval scores causal LMs; task {spec.task!r} trains a sequence classifier")
    if spec.compile and spec.warmup_steps < 1:
        out.append(f"{where}: {label}: compile needs warmup_steps >= 1 (compiling happens in the first steps)")
    if spec.eval_every and spec.eval_every >= spec.steps:
        out.append(f"{where}: {label}: eval_every {spec.eval_every} must be < steps {spec.steps} (no curve point)")
    if spec.warmup_steps >= spec.steps:
        out.append(
            f"{where}: {label}: warmup_steps {spec.warmup_steps} must be < steps {spec.steps} (no step would be timed)"
        )
    method = registry.load("method", spec.method)
    if method.required_precisions and spec.precision not in method.required_precisions:
        out.append(
            f"{where}: {label}: method {spec.method!r} needs precision "
            f"{' or '.join(method.required_precisions)}; exclude the other precisions for it"
        )
    if spec.precision in QUANTIZED and not method.quantized_base_ok:
        out.append(
            f"{where}: {label}: method {spec.method!r} cannot train a {spec.precision}-quantized base "
            f"(its weights are frozen int storage); exclude {{method: {spec.method}, precision: {spec.precision}}}"
        )
    task = registry.load("task", spec.task)
    if task.model_kind not in sources.supported_kinds(spec.model):
        out.append(f"{where}: {label}: model {spec.model!r} cannot be built for {task.model_kind} (task {spec.task!r})")
    if task.model_kind == "causal_lm" and spec.seq_len < 2:
        out.append(f"{where}: {label}: seq_len {spec.seq_len} leaves a causal LM no token to predict; use >= 2")
    if task.model_kind not in method.model_kinds:
        out.append(f"{where}: {label}: method {spec.method!r} does not support {task.model_kind}")
    return out


def distributed_problems(where: str, spec: RunSpec) -> list[str]:
    """A distributed cell's global batch must split evenly over its ranks' micro-batches; a few knobs are not
    combined with ranks yet (said here, not found out in a cell)."""
    if not spec.distributed:
        return []
    label, world = spec.run_id, spec.world_size
    out = []
    if spec.batch_size % (spec.grad_accum * world):
        out.append(
            f"{where}: {label}: batch_size {spec.batch_size} is not divisible by grad_accum x ranks "
            f"({spec.grad_accum} x {world}): every rank takes an equal share of each micro-batch"
        )
    fsdp = spec.distributed["strategy"] == "fsdp"
    for knob in ("compile", "lm_eval"):  # DDP: every rank holds the whole model
        if getattr(spec, knob) and fsdp:
            out.append(f"{where}: {label}: {knob} is not combined with FSDP cells yet; use strategy ddp for it")
    if spec.inference and spec.distributed["strategy"] == "fsdp":  # DDP: rank 0 generates with its full replica
        out.append(f"{where}: {label}: inference needs the whole model on one rank; use strategy ddp for it")
    if spec.distributed["strategy"] == "fsdp" and spec.precision in QUANTIZED:
        out.append(f"{where}: {label}: FSDP does not shard a {spec.precision}-quantized base; use strategy ddp")
    return out
