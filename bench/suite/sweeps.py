"""Option sweeps: a list where a method option (or a training override such as `lr`) takes one value expands the
entry, `{name: lora, r: [4, 8, 16]}` -> three entries `lora-r4`, `lora-r8`, `lora-r16`. Options whose own type is a
list (`target_modules: [q_proj, v_proj]`) are values, not sweeps."""

from __future__ import annotations

import itertools
import types
import typing
from typing import Any, get_origin

from bench import registry
from bench.errors import RegistryError
from bench.suite.defaults import BY_KEY, ENTRY_OVERRIDES
from bench.suite.spec import method_label

LIST_TYPES = (list, tuple, dict)


def _takes_a_list(hint: Any) -> bool:
    if get_origin(hint) in (typing.Union, types.UnionType):
        return any(_takes_a_list(h) for h in typing.get_args(hint))
    return get_origin(hint) in LIST_TYPES or hint in LIST_TYPES or hint is Any


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def sweep_keys(entry: dict[str, Any]) -> list[str]:
    """The keys of a method entry whose list value is a sweep (the option takes one value)."""
    try:
        hints = typing.get_type_hints(registry.load("method", entry["name"]).config_cls)
    except (RegistryError, KeyError, TypeError):
        return []  # an unknown method: validation names it
    out = []
    for key, value in entry.items():
        if key in ("name", "label") or not isinstance(value, list) or not value:
            continue
        if key in ENTRY_OVERRIDES:
            d = BY_KEY[key].type
            if not any(t in LIST_TYPES for t in (d if isinstance(d, tuple) else (d,))):
                out.append(key)
        elif key in hints and not _takes_a_list(hints[key]):
            out.append(key)
    return out


def expand_sweeps(entry: Any) -> list[Any]:
    """The entries a method entry stands for: itself, or one per combination of its swept values, each labelled
    with the values that tell it apart."""
    if not isinstance(entry, dict):
        return [entry]
    keys = sweep_keys(entry)
    if not keys:
        return [entry]
    out = []
    for combo in itertools.product(*(entry[k] for k in keys)):
        one = {**entry, **dict(zip(keys, combo))}
        overrides = [f"{k}{_short(v)}" for k, v in zip(keys, combo) if k in ENTRY_OVERRIDES]
        if overrides or "label" in entry:
            plugin = {k: v for k, v in one.items() if k not in ("name", "label") and k not in ENTRY_OVERRIDES}
            base = entry.get("label") or method_label(entry["name"], plugin)
            extra = [f"{k}{v}" for k, v in zip(keys, combo) if k not in ENTRY_OVERRIDES] if "label" in entry else []
            one["label"] = "-".join([base, *extra, *overrides])
        out.append(one)
    return out
