"""Where a suite's model entry comes from: a named config, a shipped asset, a config.json file, a local directory
or a hub id, with real weights or (`weights: random`) only its configuration. Resolving reads no weights."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.models import assets
from bench.models.configs import CONFIG_KINDS, CONFIGS
from bench.options import suggest

KINDS = ("causal_lm", "seq_cls")
CACHED = {"minilm-l6": assets.minilm_dir}
CACHED_KINDS = {"minilm-l6": ("seq_cls",)}  # a BERT encoder: no causal mask, so no causal-LM cells
NAMED = sorted([*CONFIGS, *CACHED])
WEIGHTS = ("pretrained", "random")
MODEL_OPTIONS = ("trust_remote_code", "revision", "weights", "tokenizer")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
)


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "config" (named) | "config_file" | "dir" | "hub"
    ref: str  # config name, file, directory or hub id
    random_weights: bool


def resolve_source(name: str, options: dict[str, Any] | None = None) -> ModelSource:
    """Map a suite's model entry to where its config and weights come from; ValueError naming the choices."""
    weights = (options or {}).get("weights", "pretrained")
    if weights not in WEIGHTS:
        raise ValueError(f"model {name!r}: weights {weights!r} is not one of {', '.join(WEIGHTS)}")
    random = weights == "random"
    if name in CONFIGS:
        return ModelSource("config", name, True)
    if name in CACHED:
        path = CACHED[name]()
        if not (path / "config.json").exists():
            raise ValueError(assets.missing_message(path))
        return ModelSource("dir", str(path), random)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".json":
            raise ValueError(f"model {name!r}: a model file must be a config .json (or give a directory)")
        if "weights" in (options or {}) and not random:
            raise ValueError(f"model {name!r}: a config file has no weights; use weights: random (the default here)")
        return ModelSource("config_file", str(path.resolve()), True)
    if path.is_dir():
        return ModelSource("dir", str(path.resolve()), random)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not name.startswith(".") and not name.endswith(".json"):
        return ModelSource("hub", name, random)
    raise ValueError(
        f"unknown model {name!r}{suggest(name, NAMED)}: not a named model ({', '.join(NAMED)}), an existing config "
        ".json file or local directory, or a hub id like org/name"
    )


def resolve_tokenizer(ref: Any) -> ModelSource:
    """Where a borrowed tokenizer (`tokenizer:` on a model entry) comes from: a shipped asset (minilm-l6), a local
    directory with tokenizer files or a hub id; ValueError naming the choices."""
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"tokenizer {ref!r}: expected a shipped model name, a local directory or a hub id")
    if ref in CONFIGS:
        raise ValueError(
            f"tokenizer {ref!r}: a named config has no tokenizer; use one of {', '.join(CACHED)}, a "
            "local directory or a hub id"
        )
    if ref in CACHED:
        path = CACHED[ref]()
        if not path.is_dir():
            raise ValueError(assets.missing_message(path))
        return ModelSource("dir", str(path), False)
    path = Path(ref).expanduser()
    if path.is_dir():
        if not any((path / f).exists() for f in TOKENIZER_FILES):
            raise ValueError(f"tokenizer {ref!r}: the directory has none of {', '.join(TOKENIZER_FILES)}")
        return ModelSource("dir", str(path.resolve()), False)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", ref) and not ref.startswith("."):
        return ModelSource("hub", ref, False)
    raise ValueError(
        f"tokenizer {ref!r}{suggest(ref, list(CACHED))}: not a shipped model ({', '.join(CACHED)}), a local "
        "directory with tokenizer files or a hub id like org/name"
    )


def supported_kinds(name: str) -> tuple[str, ...]:
    return CONFIG_KINDS.get(name) or CACHED_KINDS.get(name, KINDS)
