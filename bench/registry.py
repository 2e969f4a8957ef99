"""Plugin discovery through entry points: methods (`peft_bench.methods`) and tasks (`peft_bench.tasks`)."""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from functools import cache
from typing import Any

from bench.errors import RegistryError
from bench.options import suggest

GROUPS = {"method": "peft_bench.methods", "task": "peft_bench.tasks"}


@dataclass(frozen=True)
class PluginInfo:
    name: str
    target: str  # "package.module:Class"
    package: str  # distribution that registered it, with version


@cache
def discover(kind: str) -> dict[str, PluginInfo]:
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


def names(kind: str) -> list[str]:
    return sorted(discover(kind))


def unknown_name_message(kind: str, name: str) -> str:
    choices = names(kind)
    return f"unknown {kind} {name!r}{suggest(name, choices)}; valid: {', '.join(choices)}"


def load(kind: str, name: str) -> Any:
    """The plugin class registered as `name`."""
    plugins = discover(kind)
    if name not in plugins:
        raise RegistryError(unknown_name_message(kind, name))
    module, _, attr = plugins[name].target.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
