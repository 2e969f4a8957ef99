"""Executors: where and how the runner's cells run. Each is one module behind one small protocol, chosen by
name (`--executor` or the suite's `executor:` block): `local` (this machine: GPU slots, busy checks, launchers),
`slurm` and `submitit-local` (one submitit job per cell). Adding another is one module and one line in
`make_executor`.
"""

from __future__ import annotations

from bench.execution.base import EXECUTORS, SETTINGS, Executor, ExecutorOptions, LocalOptions, RunContext

__all__ = ["EXECUTORS", "SETTINGS", "Executor", "ExecutorOptions", "LocalOptions", "RunContext", "make_executor"]


def make_executor(name: str, options: ExecutorOptions) -> Executor:
    if name == "local":
        from bench.execution.local import LocalExecutor

        return LocalExecutor(options.local)
    if name in ("slurm", "submitit-local"):
        from bench.execution.slurm import SlurmExecutor

        return SlurmExecutor(name, options.settings, options.local.nvml_interval_s)
    raise ValueError(f"unknown executor {name!r}; valid: {', '.join(EXECUTORS)}")
