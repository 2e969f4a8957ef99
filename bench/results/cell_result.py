"""What a cell writes (RUN_DIR/result.json): its own verdict and figures, as one typed value. The supervisor's view
(NVML, RSS, exit code, provenance) is added when the record is built (bench/results/record.py)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    SUCCESS = "success"
    UNSUPPORTED = "unsupported"
    OOM = "oom"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"


FINAL = frozenset({Status.SUCCESS, Status.UNSUPPORTED})  # verdicts a resume does not redo


@dataclass(kw_only=True)
class CellResult:
    status: Status = Status.FAILED
    error: dict[str, Any] | None = None  # {type, message, traceback?}
    child_pid: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    missing_reason: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float | None] = field(default_factory=dict)
    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)
    dtypes: dict[str, Any] | None = None
    task_info: dict[str, Any] | None = None
    model_info: dict[str, Any] | None = None
    loss_curve: list[float | None] | None = None
    score_curve: list[dict[str, Any]] | None = None  # eval_every: {step, tokens, train_s, score}
    step_times_s: list[float] | None = None
    ranks: list[dict[str, Any]] | None = None  # a distributed cell's figures per rank (training phase)
    checkpoint: dict[str, Any] | None = None
    heavy_modules_loaded: list[str] | None = None
    metric_specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the plugins' own metrics, documented

    def set_missing(self, keys: tuple[str, ...] | list[str], reason: str) -> None:
        """These metrics could not be measured: null, with the reason."""
        for k in keys:
            self.metrics[k] = None
            self.missing_reason[k] = reason

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellResult:
        known = {f.name for f in fields(cls)}
        res = cls(**{k: v for k, v in data.items() if k in known})
        res.status = Status(res.status)
        return res


def json_safe(obj: Any) -> Any:
    """The object with every non-finite float as None: records are strict JSON (no NaN, no Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
