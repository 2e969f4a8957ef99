"""Validation of single suite values: training defaults and axis entries (models, tasks, methods, precisions,
grad_accum, grad_ckpt, seeds). Used by suite loading and by matrix expansion (include rules)."""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

from bench import registry
from bench.errors import RegistryError
from bench.models import sources
from bench.options import parse_options, suggest, type_error
from bench.scoring.harness import INSTALL as LM_EVAL_INSTALL
from bench.scoring.harness import LmEvalOptions
from bench.suite.defaults import BY_KEY, ENTRY_OVERRIDES, CompileOptions, DistributedOptions, InferenceOptions
from bench.suite.spec import ATTN, PRECISIONS


def check_default(key: str, value: Any, where: str, problems: list[str], out: dict[str, Any]) -> None:
    d = BY_KEY[key]
    err = type_error(value, d.type if not isinstance(d.type, tuple) else d.type[0] | d.type[1])
    if err:
        problems.append(f"{where}: {err}")
    elif d.choices and value not in d.choices:
        problems.append(f"{where}: {value!r} is not one of {', '.join(map(str, d.choices))}")
    elif d.minimum is not None and value is not None and not isinstance(value, bool) and value < d.minimum:
        bound = ">= 0" if d.minimum == 0 else "> 0" if d.minimum < 1 else f">= {d.minimum:g}"
        problems.append(f"{where}: must be {bound}, got {value!r}")
    elif key == "inference" and value is not None:
        _, errs = parse_options(InferenceOptions, value, where)
        problems.extend(errs)
        out[key] = value
    elif key == "lm_eval" and value is not None:
        _, errs = parse_options(LmEvalOptions, value, where)
        if importlib.util.find_spec("lm_eval") is None:
            errs.append(f"{where}: the lm_eval package is not installed: {LM_EVAL_INSTALL}")
        problems.extend(errs)
        out[key] = value
    else:
        out[key] = float(value) if d.type is float else value


def check_axis_entry(axis: str, value: Any, where: str, problems: list[str]) -> Any:
    if axis in ("model", "task", "method"):
        return _check_named_entry(axis, value, where, problems)
    if axis == "precision" and value not in PRECISIONS:
        problems.append(
            f"{where}: unknown precision {value!r}{suggest(str(value), PRECISIONS)}; valid: {', '.join(PRECISIONS)}"
        )
    if axis in ("grad_accum", "seed"):
        low = 1 if axis == "grad_accum" else 0
        if err := type_error(value, int) or (None if value >= low else f"must be >= {low}"):
            problems.append(f"{where}: {err}")
    if axis == "compile" and not isinstance(value, bool):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected true, false or a mapping of torch.compile options, got {value!r}")
        else:
            problems.extend(parse_options(CompileOptions, value, where)[1])
    if axis == "distributed":
        return check_distributed(value, where, problems)
    if axis == "attn" and value not in ("", *ATTN):
        problems.append(f"{where}: unknown attention {value!r}{suggest(str(value), ATTN)}; valid: {', '.join(ATTN)}")
    if axis == "grad_ckpt" and not isinstance(value, bool):
        problems.append(f"{where}: expected true or false, got {value!r}")
    return value


def check_distributed(value: Any, where: str, problems: list[str]) -> dict[str, Any] | None:
    """null (one process) or `{nproc, strategy, nnodes, timeout_s}`, resolved with every default filled in."""
    if value is None:
        return None
    if not isinstance(value, dict):
        problems.append(f"{where}: expected null or a mapping like {{nproc: 2, strategy: ddp}}, got {value!r}")
        return None
    opts, errs = parse_options(DistributedOptions, value, where)
    problems.extend(errs)
    return dataclasses.asdict(opts) if opts else None


def _check_named_entry(axis: str, value: Any, where: str, problems: list[str]) -> Any:
    entry = {"name": value} if isinstance(value, str) else value
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        problems.append(f"{where}: expected a name or a mapping with `name`, got {value!r}")
        return {"name": "?"}
    options = {k: v for k, v in entry.items() if k not in ("name", "label")}
    for key in ENTRY_OVERRIDES:
        if key in options:
            check_default(key, options.pop(key), f"{where}.{key}", problems, {})
    if "distributed" in options:  # an entry's own ranks (the matrix axis, where given, wins)
        ranks = check_distributed(options.pop("distributed"), f"{where}.distributed", problems)
        entry = {**entry, "distributed": ranks}
    if axis == "model":
        bad = set(options) - set(sources.MODEL_OPTIONS)
        if bad:
            hint = suggest(sorted(bad)[0], sources.MODEL_OPTIONS)
            problems.append(
                f"{where}: unknown model option(s) {sorted(bad)}{hint}; valid: {', '.join(sources.MODEL_OPTIONS)}"
            )
        try:
            sources.resolve_source(entry["name"], options)
            if "tokenizer" in options:
                sources.resolve_tokenizer(options["tokenizer"])
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
        return entry
    try:
        cls = registry.load(axis, entry["name"])
    except RegistryError as exc:
        problems.append(f"{where}: {exc}")
        return entry
    _, errs = parse_options(cls.config_cls, options, f"{where}.{axis}")
    problems.extend(errs)
    return entry
