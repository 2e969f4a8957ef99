"""Suite files: YAML -> Suite. Every problem is found before any cell runs, one line each, naming the file, the
key path and the valid choices. The matrix expansion into RunSpecs lives in bench/suite/matrix.py."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import SuiteError
from bench.options import suggest
from bench.suite.defaults import BY_KEY, VALUES
from bench.suite.executor import SlurmSettings, parse_executor
from bench.suite.matrix import expand
from bench.suite.spec import ALL_AXES, AXES, OPTIONAL_AXES
from bench.suite.sweeps import expand_sweeps
from bench.suite.validate import check_axis_entry, check_default


class SuiteLoader(yaml.SafeLoader):
    """YAML with the 1.2 float rule: `1e-3` and `3e-5` are numbers, as people write learning rates (YAML 1.1 reads
    them as strings)."""


SuiteLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SuiteLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=SuiteLoader)  # noqa: S506 - a SafeLoader subclass


TOP_KEYS = ("name", "description", "defaults", "matrix", "exclude", "include", "executor")
DEFAULT_KEYS = tuple(k for k in BY_KEY if k not in OPTIONAL_AXES)


@dataclass
class Suite:
    name: str
    path: str
    defaults: dict[str, Any]
    axes: dict[str, list[Any]]  # axis -> entries (method/model/task entries are dicts with `name`)
    exclude: list[dict[str, Any]] = field(default_factory=list)
    include: list[dict[str, Any]] = field(default_factory=list)
    executor: str | None = None  # the suite's executor kind (None: local unless the CLI says otherwise)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    content_hash: str = ""


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Parse and validate a suite file; SuiteError lists every problem."""
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SuiteError([f"{where}: cannot read suite: {exc.strerror}"]) from exc
    except UnicodeDecodeError:
        raise SuiteError([f"{where}: not a text file (a suite is YAML)"]) from None
    try:
        data = parse_yaml(text)
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
    defaults, axes = _defaults_and_axes(data, where, problems)
    _apply_overrides(overrides, defaults, axes, problems)
    _complete_axes(axes, defaults, where, problems)
    executor, slurm = parse_executor(data.get("executor"), where, problems)
    exclude = _rules(data.get("exclude"), f"{where}: exclude", problems)
    include = _rules(data.get("include"), f"{where}: include", problems)
    if problems:
        raise SuiteError(problems)
    suite = Suite(str(data.get("name") or Path(where).stem), where, defaults, axes, exclude, include, executor, slurm)
    expand(suite)  # cross-field checks (divisibility, method/precision combinations) before any cell runs
    return suite


def _defaults_and_axes(data: dict[str, Any], where: str, problems: list[str]) -> tuple[dict, dict]:
    raw_defaults = _mapping(data.get("defaults"), f"{where}: defaults", problems)
    raw_matrix = _mapping(data.get("matrix"), f"{where}: matrix", problems)
    defaults = {k: VALUES[k] for k in DEFAULT_KEYS}
    axes: dict[str, list[Any]] = {}
    valid = [*DEFAULT_KEYS, *ALL_AXES]
    for key, value in raw_defaults.items():
        if key in ALL_AXES:
            axes[key] = [value]
        elif key not in DEFAULT_KEYS:
            problems.append(f"{where}: defaults.{key}: unknown key{suggest(key, valid)}; valid: {', '.join(valid)}")
        else:
            check_default(key, value, f"{where}: defaults.{key}", problems, defaults)
    for key, value in raw_matrix.items():
        if key not in ALL_AXES:
            problems.append(
                f"{where}: matrix.{key}: unknown axis{suggest(key, ALL_AXES)}; valid: {', '.join(ALL_AXES)}"
            )
        elif key in axes:
            problems.append(f"{where}: matrix.{key}: axis is also fixed in defaults; set it in one place")
        elif not isinstance(value, list) or not value:
            problems.append(f"{where}: matrix.{key}: expected a non-empty list, got {value!r}")
        else:
            axes[key] = value
    return defaults, axes


def _complete_axes(axes: dict[str, list[Any]], defaults: dict[str, Any], where: str, problems: list[str]) -> None:
    for axis in AXES:
        if axis not in axes:
            problems.append(f"{where}: matrix.{axis}: missing; give the axis in matrix or fix it in defaults")
    for axis, value in OPTIONAL_AXES.items():
        axes.setdefault(axis, [VALUES.get(axis, value)])
    if defaults["repeats"] > 1:
        if len(axes["seed"]) > 1:
            problems.append(f"{where}: defaults.repeats: give repeats or a seed list in the matrix, not both")
        else:
            first = axes["seed"][0] if isinstance(axes["seed"][0], int) else 0
            axes["seed"] = [first + i for i in range(defaults["repeats"])]
    if isinstance(axes.get("method"), list):  # `{name: lora, r: [4, 8]}` stands for two entries
        axes["method"] = [one for entry in axes["method"] for one in expand_sweeps(entry)]
    for axis, values in axes.items():
        axes[axis] = [check_axis_entry(axis, v, f"{where}: matrix.{axis}[{i}]", problems) for i, v in enumerate(values)]


def _mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping, got {type(value).__name__}")
        return {}
    return value


def _apply_overrides(
    overrides: list[str], defaults: dict[str, Any], axes: dict[str, list[Any]], problems: list[str]
) -> None:
    """key=value from the CLI, parsed as YAML scalars and type-checked like the suite's own defaults."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            problems.append(f"override {item!r}: expected key=value")
            continue
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as exc:
            problems.append(f"override {item!r}: malformed value: {getattr(exc, 'problem', None) or exc}")
            continue
        if key in ALL_AXES:
            axes[key] = value if isinstance(value, list) else [value]
        elif key in DEFAULT_KEYS:
            check_default(key, value, f"override {key}", problems, defaults)
        else:
            valid = [*DEFAULT_KEYS, *ALL_AXES]
            problems.append(f"override {key}: unknown key{suggest(key, valid)}; valid: {', '.join(valid)}")


def _rules(value: Any, where: str, problems: list[str]) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        problems.append(f"{where}: expected a list of mappings like {{method: full, precision: nf4}}")
        return []
    for i, rule in enumerate(value):
        for key in rule:
            if key not in ALL_AXES:
                problems.append(
                    f"{where}[{i}].{key}: unknown axis{suggest(key, ALL_AXES)}; valid: {', '.join(ALL_AXES)}"
                )
    return value
