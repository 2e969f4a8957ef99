"""Plugin discovery through entry points: methods (`peft_bench.methods`) and tasks (`peft_bench.tasks`).

A plugin is checked when it is loaded: the entry point must import, name a subclass of the contract
(`bench.methods.base.Method`, `bench.tasks.base.Task`) whose `name` equals its entry-point key, with a config
dataclass. A plugin that fails any of these is *broken*: `peft-bench list` shows it with its error, and only a
suite that uses it fails, with one line naming the plugin and its package.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from dataclasses import dataclass
from functools import cache
from typing import Literal, overload

from bench.errors import RegistryError
from bench.methods.base import Method
from bench.options import suggest
from bench.results.metrics import MetricSpec
from bench.tasks.base import Task

Kind = Literal["method", "task"]
GROUPS: dict[str, str] = {"method": "peft_bench.methods", "task": "peft_bench.tasks"}
BASES: dict[str, type] = {"method": Method, "task": Task}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    target: str  # "package.module:Class"
    package: str  # distribution that registered it, with version


@cache
def discover(kind: Kind) -> dict[str, PluginInfo]:
    """All installed plugins of `kind`; two distributions registering one name is an error."""
    found: dict[str, PluginInfo] = {}
    for ep in importlib.metadata.entry_points(group=GROUPS[kind]):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown"
        info = PluginInfo(ep.name, ep.value, dist)
        prev = found.get(ep.name)
        if prev and prev.target != info.target:
            raise RegistryError(
                f"two plugins register {kind} {ep.name!r}: {prev.target} from {prev.package} "
                f"and {info.target} from {info.package}; uninstall one"
            )
        found[ep.name] = info
    return found


def names(kind: Kind) -> list[str]:
    return sorted(discover(kind))


def unknown_name_message(kind: Kind, name: str) -> str:
    choices = names(kind)
    return f"unknown {kind} {name!r}{suggest(name, choices)}; valid: {', '.join(choices)}"


@cache
def _load(kind: Kind, name: str) -> type:
    plugins = discover(kind)
    if name not in plugins:
        raise RegistryError(unknown_name_message(kind, name))
    info = plugins[name]
    where = f"{kind} plugin {name!r} ({info.target} from {info.package})"
    module, _, attr = info.target.partition(":")
    try:
        obj: object = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # a broken package must not hide the others
        raise RegistryError(f"{where} is broken: {type(exc).__name__}: {str(exc)[:300]}") from None
    base = BASES[kind]
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise RegistryError(f"{where} is broken: not a subclass of {base.__module__}.{base.__name__}")
    if obj.name != name:
        raise RegistryError(f"{where} is broken: its class says name {obj.name!r}, its entry point {name!r}")
    config_cls = getattr(obj, "config_cls", None)
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise RegistryError(f"{where} is broken: config_cls must be a dataclass, got {config_cls!r}")
    return obj


@overload
def load(kind: Literal["method"], name: str) -> type[Method]: ...
@overload
def load(kind: Literal["task"], name: str) -> type[Task]: ...
def load(kind: Kind, name: str) -> type[Method] | type[Task]:
    """The checked plugin class registered as `name` (RegistryError: unknown or broken)."""
    return _load(kind, name)


def load_method(name: str) -> type[Method]:
    return load("method", name)


def load_task(name: str) -> type[Task]:
    return load("task", name)


def broken(kind: Kind) -> dict[str, str]:
    """name -> why, for every installed plugin of `kind` that does not load."""
    out = {}
    for name in names(kind):
        try:
            _load(kind, name)
        except RegistryError as exc:
            out[name] = str(exc)
    return out


def package_of(kind: Kind, name: str) -> str | None:
    """The distribution (and version) that registered a plugin, for the record's env."""
    info = discover(kind).get(name)
    return info.package if info else None


def metric_specs() -> tuple[MetricSpec, ...]:
    """The metric rows every loadable installed plugin documents (README schema, `peft-bench list schema`)."""
    out: dict[str, MetricSpec] = {}
    for kind in GROUPS:
        for name in names(kind):  # type: ignore[arg-type]
            try:
                cls = _load(kind, name)  # type: ignore[arg-type]
            except RegistryError:
                continue
            for spec in cls.metric_specs:
                out.setdefault(spec.name, spec)
    return tuple(out.values())


def clear() -> None:
    """Forget what was discovered (tests install plugins on a path)."""
    discover.cache_clear()
    _load.cache_clear()
