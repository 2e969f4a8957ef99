"""The executor contract: what the runner hands an executor (RunContext), the options of each, and the names a
suite may use. Executors import this module, never the package that picks among them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bench.record import Record
from bench.rundir import OutDir
from bench.spec import RunSpec

EXECUTORS = ("local", "slurm", "submitit-local")
# executor settings a suite's `executor:` block may set (local ignores them)
SETTINGS: dict[str, Any] = {
    "partition": str,
    "account": str,
    "gpus_per_job": int,
    "time_min": int,
    "time_margin_min": int,
    "cpus_per_task": int,
    "mem_gb": int,
    "qos": str,
    "constraint": str,
    "sbatch": list[str],
}


@dataclass
class RunContext:
    """What an executor gets from the runner: where records go and when to stop."""

    out: OutDir
    on_record: Callable[[Record], None]
    should_stop: Callable[[], bool]
    progress: Callable[[str], None] = print


@dataclass
class LocalOptions:
    launcher: str = "auto"  # auto | spawn | fork-server
    gpus: list[int] | None = None  # NVML indices; None: every visible GPU
    allow_busy_gpu: bool = False
    busy_threshold_mib: float = 500.0
    busy_wait_s: float = 60.0
    nvml_interval_s: float = 0.01
    exit_grace_s: float = 30.0  # a cell that wrote its result but has not exited by then is killed
    fit_check: bool = True  # on a GPU: a cell whose memory estimate exceeds the free memory is not started


@dataclass
class ExecutorOptions:
    local: LocalOptions = field(default_factory=LocalOptions)
    settings: dict[str, Any] = field(default_factory=dict)  # the Slurm / submitit settings


class Executor(Protocol):
    name: str

    def run(self, specs: list[RunSpec], ctx: RunContext) -> None:
        """Run every spec (in order, as slots allow), calling ctx.on_record once per cell; stop taking new
        cells once ctx.should_stop() is true."""
