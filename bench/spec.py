"""RunSpec: one cell of a suite's matrix, a frozen value that crosses process boundaries as JSON."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

AXES = ("model", "task", "method", "precision", "grad_accum")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "nf4")


@dataclass(frozen=True)
class RunSpec:
    suite: str
    model: str
    task: str
    method: str
    precision: str
    grad_accum: int
    batch_size: int  # effective batch: micro_batch * grad_accum
    steps: int  # optimizer steps, warm-up included
    warmup_steps: int
    seq_len: int
    lr: float
    seed: int
    timeout_s: float
    device: str = "auto"
    eval_batch_size: int = 32
    save_checkpoint: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    method_label: str = ""
    suite_hash: str = ""

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    @property
    def run_id(self) -> str:
        label = self.method_label or method_label(self.method, self.method_options)
        parts = [_slug(model_label(self.model)), _slug(self.task), _slug(label), self.precision, f"ga{self.grad_accum}"]
        return "--".join(parts)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    @classmethod
    def read(cls, path: Path) -> RunSpec:
        return cls.from_json(Path(path).read_text())


def model_label(model: str) -> str:
    """A short readable name for a model source: the last path component of a path or hub id."""
    return model.rstrip("/").split("/")[-1] or model


def method_label(name: str, options: dict[str, Any]) -> str:
    """`lora` + {r: 8} -> `lora-r8`; long option sets get a short stable hash instead."""
    if not options:
        return name
    compact = "-".join(f"{k}{_compact_value(v)}" for k, v in sorted(options.items()))
    if len(compact) <= 32 and re.fullmatch(r"[A-Za-z0-9_.\-]+", compact):
        return f"{name}-{compact}"
    digest = hashlib.sha1(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def _compact_value(value: Any) -> str:
    if isinstance(value, bool):
        return "" if value else "off"
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return str(value)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+\-]+", "_", text)
