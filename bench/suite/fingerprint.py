"""What a cell's local files contain, for the spec hash: a path string says nothing about a config.json edited in
place or a teacher retrained into the same folder. A file: the hash of its bytes (large ones: name and size).
A directory: the hash of its config files plus the names and sizes of every other file (weights are too big to
hash on every suite load; mtime is not content)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

SMALL_FILE = 64 * 2**20  # files up to this are hashed whole
CONFIG_SUFFIXES = (".json", ".yaml", ".yml", ".txt", ".model")


def _file_digest(path: Path, h: Any) -> None:
    size = path.stat().st_size
    if size <= SMALL_FILE:
        h.update(path.read_bytes())
    else:
        h.update(f"{path.name}:{size}".encode())


def fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_file():
        _file_digest(path, h)
    else:
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = f.relative_to(path).as_posix()
            h.update(rel.encode())
            if f.suffix in CONFIG_SUFFIXES:
                _file_digest(f, h)
            else:
                h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def local_path(value: Any) -> Path | None:
    if not isinstance(value, str) or not value or len(value) > 4096:
        return None
    try:
        path = Path(value).expanduser()
        return path if path.exists() else None
    except OSError:
        return None


def content_of(model: str, entries: dict[str, tuple[dict[str, Any], tuple[str, ...]]]) -> dict[str, str]:
    """where -> fingerprint of the model source (when it is a local file or directory) and of each declared input
    field (a plugin config's `content_fields`) of the entries' options that names an existing local path. Only
    declared inputs: a path the cell writes (a marker, an output) must not change the hash between runs."""
    paths = {"model": p} if (p := local_path(model)) else {}
    for where, (options, declared) in entries.items():
        for key in declared:
            if p := local_path(options.get(key)):
                paths[f"{where}.{key}"] = p
    return {where: fingerprint(p) for where, p in sorted(paths.items())}
