"""Suite files: YAML -> Suite -> [RunSpec]. Every problem is found before any cell runs, one line each,
naming the file, the key path and the valid choices."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bench import models, registry
from bench.errors import RegistryError, SuiteError
from bench.options import _type_error, parse_options, suggest
from bench.precision import QUANTIZED
from bench.spec import AXES, PRECISIONS, RunSpec, method_label

TOP_KEYS = ("name", "description", "defaults", "matrix", "exclude", "include", "executor")
# defaults: key -> (type, default); axes may also be fixed here.
DEFAULTS: dict[str, tuple[Any, Any]] = {
    "steps": (int, 20),
    "warmup_steps": (int, 2),
    "batch_size": (int, 8),
    "seq_len": (int, 64),
    "lr": (float, 1e-3),
    "seed": (int, 0),
    "timeout_s": (float, 1800.0),
    "device": (str, "auto"),
    "eval_batch_size": (int, 32),
    "save_checkpoint": (bool, True),
}
DEVICES = ("auto", "cpu", "cuda")
# Training keys an axis entry may set for its own cells; precedence: method > task > model > defaults.
ENTRY_OVERRIDES = ("steps", "warmup_steps", "batch_size", "seq_len", "lr", "eval_batch_size", "timeout_s")


@dataclass
class Suite:
    name: str
    path: str
    defaults: dict[str, Any]
    axes: dict[str, list[Any]]  # axis -> entries (method/model/task entries are dicts with `name`)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    executor: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Parse and validate a suite file; SuiteError lists every problem."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError([f"{where}: cannot read suite: {exc.strerror}"]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise SuiteError([f"{where}{pos}: malformed YAML: {getattr(exc, 'problem', None) or exc}"]) from exc
    suite = parse_suite(data, where, overrides or [])
    suite.content_hash = hashlib.sha256(text.encode()).hexdigest()[:12]
    return suite


def parse_suite(data: Any, where: str, overrides: list[str]) -> Suite:
    problems: list[str] = []
    if not isinstance(data, dict):
        raise SuiteError([f"{where}: a suite must be a mapping with keys {', '.join(TOP_KEYS)}"])
    for key in data:
        if key not in TOP_KEYS:
            problems.append(f"{where}: {key}: unknown key{suggest(key, TOP_KEYS)}; valid: {', '.join(TOP_KEYS)}")
    raw_defaults = _mapping(data.get("defaults"), f"{where}: defaults", problems)
    raw_matrix = _mapping(data.get("matrix"), f"{where}: matrix", problems)
    defaults = {k: d for k, (_, d) in DEFAULTS.items()}
    axes: dict[str, list[Any]] = {}
    for key, value in raw_defaults.items():
        if key in AXES:
            axes[key] = [value]
        elif key not in DEFAULTS:
            valid = [*DEFAULTS, *AXES]
            problems.append(f"{where}: defaults.{key}: unknown key{suggest(key, valid)}; valid: {', '.join(valid)}")
        else:
            _check_default(key, value, f"{where}: defaults.{key}", problems, defaults)
    for key, value in raw_matrix.items():
        if key not in AXES:
            problems.append(f"{where}: matrix.{key}: unknown axis{suggest(key, AXES)}; valid: {', '.join(AXES)}")
        elif key in axes:
            problems.append(f"{where}: matrix.{key}: axis is also fixed in defaults; set it in one place")
        elif not isinstance(value, list) or not value:
            problems.append(f"{where}: matrix.{key}: expected a non-empty list, got {value!r}")
        else:
            axes[key] = value
    _apply_overrides(overrides, defaults, axes, problems)
    for axis in AXES:
        if axis not in axes:
            problems.append(f"{where}: matrix.{axis}: missing; give the axis in matrix or fix it in defaults")
    for axis, values in axes.items():
        axes[axis] = [
            _check_axis_entry(axis, v, f"{where}: matrix.{axis}[{i}]", problems) for i, v in enumerate(values)
        ]
    executor = _mapping(data.get("executor"), f"{where}: executor", problems)
    from bench.slurm import EXECUTORS, SETTINGS

    for key, value in executor.items():
        if key == "kind":
            if value not in EXECUTORS:
                problems.append(f"{where}: executor.kind: {value!r} is not one of {', '.join(EXECUTORS)}")
        elif key not in SETTINGS:
            valid = ["kind", *SETTINGS]
            problems.append(f"{where}: executor.{key}: unknown key{suggest(key, valid)}; valid: {', '.join(valid)}")
        elif err := _type_error(value, SETTINGS[key]):
            problems.append(f"{where}: executor.{key}: {err}")
    exclude = _rules(data.get("exclude"), f"{where}: exclude", problems)
    include = _rules(data.get("include"), f"{where}: include", problems)
    if problems:
        raise SuiteError(problems)
    suite = Suite(str(data.get("name") or Path(where).stem), where, defaults, axes, exclude, include, executor)
    expand(suite)  # cross-field checks (divisibility, method/precision combinations) before any cell runs
    return suite


def _mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
        return {}
    return value


def _check_default(key: str, value: Any, where: str, problems: list[str], out: dict[str, Any]) -> None:
    typ = DEFAULTS[key][0]
    err = _type_error(value, typ)
    if err:
        problems.append(f"{where}: {err}")
    elif key == "device" and value not in DEVICES:
        problems.append(f"{where}: {value!r} is not one of {', '.join(DEVICES)}")
    elif typ in (int, float) and value < (0 if key in ("warmup_steps", "seed") else 1e-12):
        problems.append(f"{where}: must be {'>= 0' if key in ('warmup_steps', 'seed') else '> 0'}, got {value!r}")
    else:
        out[key] = float(value) if typ is float else value


def _apply_overrides(
    overrides: list[str], defaults: dict[str, Any], axes: dict[str, list[Any]], problems: list[str]
) -> None:
    """key=value from the CLI, parsed as YAML scalars and type-checked like the suite's own defaults."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            problems.append(f"override {item!r}: expected key=value")
            continue
        value = yaml.safe_load(raw)
        if key in AXES:
            axes[key] = value if isinstance(value, list) else [value]
        elif key in DEFAULTS:
            _check_default(key, value, f"override {key}", problems, defaults)
        else:
            valid = [*DEFAULTS, *AXES]
            problems.append(f"override {key}: unknown key{suggest(key, valid)}; valid: {', '.join(valid)}")


def _check_axis_entry(axis: str, value: Any, where: str, problems: list[str]) -> Any:
    if axis in ("model", "task", "method"):
        entry = {"name": value} if isinstance(value, str) else value
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{where}: expected a name or a mapping with `name`, got {value!r}")
            return {"name": "?"}
        name = entry["name"]
        options = _options(entry)
        for key in ENTRY_OVERRIDES:
            if key in options:
                _check_default(key, options.pop(key), f"{where}.{key}", problems, {})
        if axis == "model":
            try:
                models.resolve_source(name)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
            bad = set(options) - {"trust_remote_code", "revision"}
            if bad:
                problems.append(f"{where}: unknown model option(s) {sorted(bad)}; valid: trust_remote_code, revision")
            return entry
        try:
            cls = registry.load(axis, name)
        except RegistryError as exc:
            problems.append(f"{where}: {exc}")
            return entry
        _, errs = parse_options(cls.config_cls, options, f"{where}.{axis}")
        problems.extend(errs)
        return entry
    if axis == "precision" and value not in PRECISIONS:
        problems.append(
            f"{where}: unknown precision {value!r}{suggest(str(value), PRECISIONS)}; valid: {', '.join(PRECISIONS)}"
        )
    if axis == "grad_accum" and (err := _type_error(value, int) or (None if value >= 1 else "must be >= 1")):
        problems.append(f"{where}: {err}")
    return value


def _rules(value: Any, where: str, problems: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        problems.append(f"{where}: expected a list of mappings like {{method: full, precision: nf4}}")
        return []
    for i, rule in enumerate(value):
        for key in rule:
            if key not in AXES:
                problems.append(f"{where}[{i}].{key}: unknown axis{suggest(key, AXES)}; valid: {', '.join(AXES)}")
    return value


def _entry_name(axis: str, entry: Any) -> Any:
    return entry["name"] if isinstance(entry, dict) else entry


def _matches(rule: dict[str, Any], cell: dict[str, Any]) -> bool:
    for axis, want in rule.items():
        entry = cell[axis]
        names = {_entry_name(axis, entry)}
        if axis == "method":
            names.add(entry.get("label") or method_label(entry["name"], _plugin_options(entry)))
        wants = want if isinstance(want, list) else [want]
        if not any(_entry_name(axis, w) in names for w in wants):
            return False
    return True


def _options(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if k not in ("name", "label")}


def _plugin_options(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in _options(entry).items() if k not in ENTRY_OVERRIDES}


def _entry_overrides(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if DEFAULTS[k][0] is float else v) for k, v in entry.items() if k in ENTRY_OVERRIDES}


def expand(suite: Suite) -> list[RunSpec]:
    """The suite's cells in matrix order: product of axes minus `exclude`, plus `include`."""
    cells = [dict(zip(AXES, combo)) for combo in itertools.product(*(suite.axes[a] for a in AXES))]
    cells = [c for c in cells if not any(_matches(r, c) for r in suite.exclude)]
    for i, rule in enumerate(suite.include):
        problems: list[str] = []
        cell = {
            a: (
                _check_axis_entry(a, rule[a], f"{suite.path}: include[{i}].{a}", problems)
                if a in rule
                else suite.axes[a][0]
                if len(suite.axes[a]) == 1
                else None
            )
            for a in AXES
        }
        unset = [a for a, v in cell.items() if v is None]
        if unset:
            problems.append(f"{suite.path}: include[{i}]: give {', '.join(unset)} (the matrix has several values)")
        if problems:
            raise SuiteError(problems)
        cells.append(cell)
    specs, problems, seen = [], [], {}
    for cell in cells:
        spec = _to_spec(suite, cell)
        problems.extend(_combination_problems(suite.path, spec))
        if spec.run_id in seen:
            problems.append(f"{suite.path}: two cells share run_id {spec.run_id!r}; give one of the entries a `label`")
        seen[spec.run_id] = spec
        specs.append(spec)
    if problems:
        raise SuiteError(sorted(set(problems), key=problems.index))
    return specs


def _to_spec(suite: Suite, cell: dict[str, Any]) -> RunSpec:
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
        model_options=_plugin_options(model),
        task_options=_plugin_options(task),
        method_options=_plugin_options(method),
        method_label=method.get("label") or method_label(method["name"], _plugin_options(method)),
        suite_hash=suite.content_hash,
        **training,
    )


def _combination_problems(where: str, spec: RunSpec) -> list[str]:
    out = []
    label = spec.run_id
    if spec.batch_size % spec.grad_accum:
        out.append(
            f"{where}: {label}: batch_size {spec.batch_size} is not divisible by grad_accum "
            f"{spec.grad_accum} (the effective batch is split into equal micro-batches)"
        )
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
            f"(its weights are frozen int storage); exclude {{method: {spec.method}, precision: "
            f"{spec.precision}}}"
        )
    task = registry.load("task", spec.task)
    if task.model_kind not in models.supported_kinds(spec.model):
        out.append(f"{where}: {label}: model {spec.model!r} cannot be built for {task.model_kind} (task {spec.task!r})")
    if task.model_kind not in method.model_kinds:
        out.append(f"{where}: {label}: method {spec.method!r} does not support {task.model_kind}")
    return out
