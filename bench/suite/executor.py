"""The suite's `executor:` block: which executor runs the cells and, for Slurm, how jobs are requested. Plain data:
the execution package reads it, the suite validates it when it loads."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.options import parse_options, suggest

EXECUTOR_KINDS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True, kw_only=True)
class SlurmSettings:
    """How each cell's Slurm job is requested (README: Running on a Slurm cluster)."""

    partition: str | None = None
    account: str | None = None
    gpus_per_job: int | None = None  # None: one GPU for cells that need one, none for CPU cells
    time_min: int | None = None  # None: the cell's timeout_s + time_margin_min
    time_margin_min: int = 5
    cpus_per_task: int | None = None
    mem_gb: int | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: list[str] = field(default_factory=list)  # extra sbatch options, e.g. ["--exclusive"]

    def merged(self, **overrides: Any) -> SlurmSettings:
        """These settings with the CLI's values (None: keep the suite's)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(SlurmSettings))


def parse_executor(value: Any, where: str, problems: list[str]) -> tuple[str | None, SlurmSettings]:
    """(kind or None when the suite names none, settings) from the suite's `executor:` mapping."""
    if value is None:
        return None, SlurmSettings()
    if not isinstance(value, dict):
        problems.append(f"{where}: executor: expected a mapping, got {type(value).__name__}")
        return None, SlurmSettings()
    kind = value.get("kind")
    if kind is not None and kind not in EXECUTOR_KINDS:
        problems.append(
            f"{where}: executor.kind: {kind!r} is not one of {', '.join(EXECUTOR_KINDS)}{suggest(kind, EXECUTOR_KINDS)}"
        )
    rest = {k: v for k, v in value.items() if k != "kind"}
    settings, errs = parse_options(SlurmSettings, rest, f"{where}: executor")
    problems.extend(e.replace("valid: ", "valid: kind, ", 1) if "unknown option" in e else e for e in errs)
    return kind, settings or SlurmSettings()
