"""RunSpec: one cell of a suite's matrix, a frozen value that crosses process boundaries as JSON.

Run-id rule: every value that distinguishes two cells of a suite is in the run id. The id names the axes
(model, task, method label, precision, grad_accum) and, where they differ from their defaults, the optional
axes (`--gc` for gradient checkpointing, `--sN` for seed N). Training settings that are not axes (steps, lr, ...)
are not in the id; resume compares `spec_hash` (every resolved value that changes what a cell measures), so
editing them reruns the cell instead of reusing an old record.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from bench.suite.defaults import VALUES, DistributedOptions

AXES = ("model", "task", "method", "precision", "grad_accum")
OPTIONAL_AXES = {"grad_ckpt": False, "seed": 0, "attn": "", "compile": False, "distributed": None}  # when not given
ATTN = ("eager", "sdpa", "flash_attention_2", "flex_attention")  # `attn` axis: transformers' attn_implementation
ALL_AXES = (*AXES, *OPTIONAL_AXES)
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "nf4")
# Fields that do not change what a cell measures: editing them must not rerun finished cells.
NOT_HASHED = ("suite", "suite_hash", "timeout_s")
# Fields added after records existed: left out of the hash at these values, so older records still resume.
HASHED_UNLESS = {
    "content": {},
    "eval_every": 0,
    "lm_eval": None,
    "attn": "",
    "compile": False,
    "probe": False,
    "memory_limit_mib": None,
    "distributed": None,
}


@dataclass(frozen=True)
class RunSpec:
    suite: str
    model: str
    task: str
    method: str
    precision: str
    grad_accum: int
    batch_size: int = VALUES["batch_size"]  # effective batch: micro_batch * grad_accum
    steps: int = VALUES["steps"]  # optimizer steps, warm-up included
    warmup_steps: int = VALUES["warmup_steps"]
    seq_len: int = VALUES["seq_len"]
    lr: float = VALUES["lr"]
    seed: int = VALUES["seed"]
    timeout_s: float = VALUES["timeout_s"]
    device: str = VALUES["device"]
    eval_batch_size: int | None = VALUES["eval_batch_size"]
    eval_before: bool = VALUES["eval_before"]
    eval_every: int = VALUES["eval_every"]
    save_checkpoint: bool = VALUES["save_checkpoint"]
    allow_emulated_precision: bool = VALUES["allow_emulated_precision"]
    cuda_alloc_conf: str = VALUES["cuda_alloc_conf"]
    inference: dict[str, Any] | None = VALUES["inference"]
    lm_eval: dict[str, Any] | None = VALUES["lm_eval"]
    grad_ckpt: bool = False
    attn: str = ""  # attn_implementation ("": the model's default)
    compile: bool | dict[str, Any] = False  # torch.compile after the method is applied (true or its options)
    probe: bool = False  # a `peft-bench fit` probe: trains only (no evaluation after, no save, no inference)
    memory_limit_mib: float | None = None  # what the cell may allocate beyond its state after imports (fit)
    distributed: dict[str, Any] | None = None  # {nproc, strategy, nnodes}: the cell's ranks (None: one process)
    model_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    method_options: dict[str, Any] = field(default_factory=dict)
    method_label: str = ""
    suite_hash: str = ""
    content: dict[str, str] = field(default_factory=dict)  # local file/dir -> fingerprint (bench/suite/fingerprint)

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.grad_accum

    @property
    def world_size(self) -> int:
        return self.distributed["nproc"] * self.distributed.get("nnodes", 1) if self.distributed else 1

    @property
    def eval_batch(self) -> int:
        """Evaluation batch: the suite's eval_batch_size, else the training micro-batch."""
        return self.eval_batch_size or self.micro_batch

    @property
    def run_id(self) -> str:
        label = self.method_label or method_label(self.method, self.method_options)
        parts = [slug(model_label(self.model)), slug(self.task), slug(label), self.precision, f"ga{self.grad_accum}"]
        if self.grad_ckpt:
            parts.append("gc")
        if self.attn:
            parts.append(f"attn-{self.attn}")
        if self.compile:
            parts.append(compile_label(self.compile))
        if self.distributed:
            parts.append(DistributedOptions(**self.distributed).label())
        if self.seed != OPTIONAL_AXES["seed"]:
            parts.append(f"s{self.seed}")
        return "--".join(parts)

    @property
    def spec_hash(self) -> str:
        """Hash of every resolved value that changes what the cell measures (not of the suite file's text)."""
        data = {k: v for k, v in asdict(self).items() if k not in NOT_HASHED}
        for key, value in HASHED_UNLESS.items():
            if data[key] == value:
                del data[key]
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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


def compile_label(value: bool | dict[str, Any]) -> str:
    """`true` -> `compile`; `{backend: aot_eager, mode: ...}` -> `compile-aot_eager-...` (values in key order)."""
    if value is True or not isinstance(value, dict) or not value:
        return "compile"
    return slug("-".join(["compile", *(str(value[k]) for k in sorted(value))]))


def model_label(model: str) -> str:
    """A short readable name for a model source: the last path component (config files: their stem)."""
    parts = model.rstrip("/").split("/")
    last = parts[-1] or model
    if last == "config.json" and len(parts) > 1:
        return parts[-2]
    return last[: -len(".json")] if last.endswith(".json") else last


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


def slug(text: str) -> str:
    """A safe single path component: no separators, no leading dots."""
    out = re.sub(r"[^A-Za-z0-9_.+\-]+", "_", text).lstrip(".")
    return out or "_"
