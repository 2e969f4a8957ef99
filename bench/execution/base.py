"""The executor contract: what the runner hands an executor (RunContext), the options of each, and the names a
suite may use. Executors import this module, never the package that picks among them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from bench.results.record import Record
from bench.results.rundir import OutDir
from bench.suite.executor import SlurmSettings
from bench.suite.spec import RunSpec


@dataclass(kw_only=True)
class RunContext:
    """What an executor gets from the runner: where records go and when to stop."""

    out: OutDir
    on_record: Callable[[Record], None]
    should_stop: Callable[[], bool]
    progress: Callable[[str], None] = print


BUSY_THRESHOLD_MIB = 500.0  # GPU memory held by others above which a GPU counts as busy
EXIT_GRACE_S = 30.0  # a cell that wrote its result but has not exited by then is killed
HEARTBEAT_S = 60.0  # a cell running longer says this often which phase it is in


@dataclass(kw_only=True)
class LocalOptions:
    launcher: str = "auto"  # auto, or a name of bench.execution.launchers.LAUNCHERS
    gpus: list[int] | None = None  # NVML indices; None: every visible GPU
    allow_busy_gpu: bool = False
    busy_threshold_mib: float = BUSY_THRESHOLD_MIB
    busy_wait_s: float = 60.0
    nvml_interval_s: float = 0.01
    exit_grace_s: float = EXIT_GRACE_S
    heartbeat_s: float = HEARTBEAT_S
    fit_check: bool = True  # on a GPU: a cell whose memory estimate exceeds the free memory is not started


@dataclass(kw_only=True)
class ExecutorOptions:
    local: LocalOptions = field(default_factory=LocalOptions)
    slurm: SlurmSettings = field(default_factory=SlurmSettings)  # the Slurm / submitit settings


class Executor(Protocol):
    name: str

    def run(self, specs: list[RunSpec], ctx: RunContext) -> None:
        """Run every spec (in order, as slots allow), calling ctx.on_record once per cell; stop taking new
        cells once ctx.should_stop() is true."""
