"""Executors: where and how the runner's cells run, chosen by name (`--executor` or the suite's `executor:` block)
from the table below: `local` (this machine: GPU slots, busy checks, launchers), `slurm` and `submitit-local`
(one submitit job per cell). Adding another is one module and one row in `EXECUTORS`.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.execution.base import Executor, ExecutorOptions, LocalOptions, RunContext
from bench.suite.executor import EXECUTOR_KINDS

__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "LocalOptions", "RunContext", "make_executor"]


def _local(options: ExecutorOptions) -> Executor:
    from bench.execution.local import LocalExecutor

    return LocalExecutor(options.local)


def _submitit(kind: str) -> Callable[[ExecutorOptions], Executor]:
    def make(options: ExecutorOptions) -> Executor:
        from bench.execution.slurm import SlurmExecutor

        return SlurmExecutor(kind, options.slurm, options.local.nvml_interval_s)

    return make


# name -> factory (imports lazily: submitit only where a Slurm executor is used)
EXECUTORS: dict[str, Callable[[ExecutorOptions], Executor]] = {
    "local": _local,
    "slurm": _submitit("slurm"),
    "submitit-local": _submitit("submitit-local"),
}
assert tuple(EXECUTORS) == EXECUTOR_KINDS, "the suite's executor kinds and this table must agree"


def make_executor(name: str, options: ExecutorOptions) -> Executor:
    if name not in EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
    return EXECUTORS[name](options)
