"""Typed option dataclasses filled from suite dicts, with errors that name the key and the choices."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, get_args, get_origin


def suggest(name: str, choices: typing.Iterable[str]) -> str:
    """' (did you mean X?)' for a near miss, else ''."""
    close = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_options(cls: type, options: dict[str, Any], where: str) -> tuple[Any, list[str]]:
    """Build dataclass `cls` from `options`; return (instance or None, problems)."""
    problems: list[str] = []
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in dataclasses.fields(cls) if f.init]
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if key not in valid:
            choices = ", ".join(valid) or "none"
            problems.append(f"{where}.{key}: unknown option{suggest(key, valid)}; valid: {choices}")
            continue
        err = type_error(value, hints[key])
        if err:
            problems.append(f"{where}.{key}: {err}")
        else:
            clean[key] = float(value) if hints[key] is float and isinstance(value, int) else value
    if problems:
        return None, problems
    try:
        return cls(**clean), []
    except (ValueError, TypeError) as exc:  # __post_init__ range checks
        return None, [f"{where}: {exc}"]


def type_error(value: Any, hint: Any) -> str | None:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        return None if value in choices else f"{value!r} is not one of {', '.join(map(repr, choices))}"
    if origin in (typing.Union, types.UnionType):
        errors = [type_error(value, arg) for arg in get_args(hint)]
        return None if any(e is None for e in errors) else f"{value!r} does not fit {_name(hint)}"
    if hint is type(None):
        return None if value is None else "expected null"
    if origin is dict:
        return None if isinstance(value, dict) else f"expected a mapping, got {type(value).__name__} {value!r}"
    if origin in (list, tuple):
        if not isinstance(value, list):
            return f"expected a list, got {type(value).__name__} {value!r}"
        (item,) = get_args(hint)[:1] or (Any,)
        for v in value:
            if item is not Any and (e := type_error(v, item)):
                return e
        return None
    if hint is Any:
        return None
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return None if ok else f"expected {_name(hint)}, got {type(value).__name__} {value!r}"


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
