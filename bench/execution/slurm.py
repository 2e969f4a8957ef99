"""Slurm fan-out through submitit: each cell is one job that runs `supervise_cell` on its node (the same code as
the local executor: child process, NVML over its tree) and returns the record. Only the submitting runner
appends to results.jsonl, so resume and the out-dir lock work across submissions.

`submitit-local` uses submitit's LocalExecutor (jobs as local processes) to test the same path without Slurm.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from bench.execution.base import RunContext
from bench.record import CellExit, Record, Status, build_record
from bench.spec import RunSpec


def run_cell_job(spec_json: str, run_dir: str, nvml_interval_s: float) -> str:
    """Entry point on the allocated node: one cell, supervised as the local executor does it."""
    from bench import nvml
    from bench.envinfo import base_env
    from bench.execution.gpus import inherited_visible_devices, resolve_slots
    from bench.execution.launchers import SpawnLauncher
    from bench.execution.supervise import CellJob, supervise_cell
    from bench.rundir import RunDir

    spec = RunSpec.from_json(spec_json)
    backend, reason = nvml.open_backend()
    slot = resolve_slots(backend, None, inherited_visible_devices())[0]  # Slurm's allocation, in its order
    env = base_env()
    if backend is not None:
        env["gpu_driver"] = backend.driver()
    env["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    job = CellJob(spec, RunDir(Path(run_dir)), SpawnLauncher(), slot, backend, reason, nvml_interval_s, env)
    return json.dumps(supervise_cell(job).to_dict(), default=str)


def never_ran(spec: RunSpec, ctx: RunContext, status: Status, message: str, job_id: str | None) -> Record:
    """The record of a cell whose job produced none (canceled before it ran, killed by Slurm, node failure)."""
    parent = {"run_dir": str(ctx.out.run(spec.run_id).path), "runner_pid": os.getpid(), "env": {"slurm_job_id": job_id}}
    return build_record(spec, None, CellExit(None, status, message), parent)


class SlurmExecutor:
    def __init__(self, kind: str, settings: dict[str, Any], nvml_interval_s: float):
        self.name, self.settings, self.nvml_interval_s = kind, settings, nvml_interval_s

    def _executor(self, folder: Path, spec: RunSpec) -> Any:
        import submitit

        time_min = self.settings.get("time_min") or int(spec.timeout_s // 60) + 1 + self.settings.get(
            "time_margin_min", 5
        )
        if self.name == "submitit-local":
            ex = submitit.LocalExecutor(folder=str(folder))
            ex.update_parameters(timeout_min=time_min)
            return ex
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        params: dict[str, Any] = {"timeout_min": time_min, "tasks_per_node": 1, "nodes": 1}
        gpus = self.settings.get("gpus_per_job", 1 if spec.device in ("cuda", "auto") else 0)
        if gpus:
            params["gpus_per_node"] = gpus
        for key, name in (
            ("partition", "slurm_partition"),
            ("account", "slurm_account"),
            ("qos", "slurm_qos"),
            ("constraint", "slurm_constraint"),
            ("cpus_per_task", "cpus_per_task"),
            ("mem_gb", "mem_gb"),
        ):
            if self.settings.get(key) is not None:
                params[name] = self.settings[key]
        ex.update_parameters(**params)
        return ex

    def run(self, specs: list[RunSpec], ctx: RunContext) -> None:
        ctx.progress(f"submitting {len(specs)} jobs with submitit ({self.name}); logs in {ctx.out.slurm}")
        jobs = {}
        for spec in specs:
            ex = self._executor(ctx.out.slurm, spec)
            run_dir = ctx.out.run(spec.run_id).path
            jobs[ex.submit(run_cell_job, spec.to_json(), str(run_dir), self.nvml_interval_s)] = spec
        pending = dict(jobs)
        while pending:
            if ctx.should_stop():
                for job, spec in pending.items():
                    job.cancel(check=False)
                    ctx.on_record(
                        never_ran(
                            spec,
                            ctx,
                            Status.CANCELED,
                            f"job {job.job_id} canceled by a signal to the runner",
                            job.job_id,
                        )
                    )
                return
            for job in [j for j in pending if j.done()]:
                spec = pending.pop(job)
                try:
                    ctx.on_record(Record.from_dict(json.loads(job.result())))
                except Exception as exc:  # the job itself died (node failure, Slurm time limit, ...)
                    msg = f"job {job.job_id} did not return a record: {type(exc).__name__}: {str(exc)[-1500:]}"
                    ctx.on_record(never_ran(spec, ctx, Status.FAILED, msg, job.job_id))
            time.sleep(0.2)
