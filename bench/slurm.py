"""Slurm fan-out through submitit: each cell is one job; the job runs the cell on its node exactly as the
local runner does (child process, NVML over its tree), and returns the record as JSON. Only the submitting
runner appends to results.jsonl, so resume and the out-dir lock work across submissions.

`submitit-local` uses submitit's LocalExecutor (jobs as local processes) to test the same path without Slurm.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXECUTORS = ("local", "slurm", "submitit-local")
SETTINGS = {
    "partition": str,
    "account": str,
    "gpus_per_job": int,
    "time_min": int,
    "cpus_per_task": int,
    "mem_gb": int,
    "qos": str,
    "constraint": str,
}


class _Never:
    flag = False


def run_cell_job(spec_json: str, out_dir: str, nvml_interval_s: float) -> str:
    """Entry point on the allocated node: one cell, same code path as `peft-bench run`."""
    from bench import nvml
    from bench.envinfo import base_env
    from bench.launcher import SpawnLauncher
    from bench.runner import RunOptions, run_one
    from bench.spec import RunSpec

    spec = RunSpec.from_json(spec_json)
    backend, reason = nvml.open_backend()
    gpu = None
    if backend is not None:  # Slurm sets CUDA_VISIBLE_DEVICES to the allocated device(s)
        gpu = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0])
    env = base_env()
    if backend is not None:
        env["gpu_driver"] = backend.driver()
    opts = RunOptions(out_dir=Path(out_dir), nvml_interval_s=nvml_interval_s)
    rec = run_one(spec, Path(out_dir), SpawnLauncher(), backend, reason, opts, _Never(), env, gpu)
    rec["env"]["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    return json.dumps(rec, default=str)


def make_executor(kind: str, folder: Path, settings: dict[str, Any], max_timeout_s: float) -> Any:
    import submitit

    time_min = settings.get("time_min") or int(max_timeout_s // 60) + 10
    if kind == "submitit-local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=time_min)
        return ex
    ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, Any] = {
        "timeout_min": time_min,
        "gpus_per_node": settings.get("gpus_per_job", 1),
        "tasks_per_node": 1,
        "nodes": 1,
    }
    for key, name in (
        ("partition", "slurm_partition"),
        ("account", "slurm_account"),
        ("qos", "slurm_qos"),
        ("constraint", "slurm_constraint"),
        ("cpus_per_task", "cpus_per_task"),
        ("mem_gb", "mem_gb"),
    ):
        if settings.get(key) is not None:
            params[name] = settings[key]
    ex.update_parameters(**params)
    return ex


def run_jobs(
    todo: list[Any],
    out: Path,
    kind: str,
    settings: dict[str, Any],
    nvml_interval_s: float,
    on_done: Callable[[dict[str, Any]], None],
    cancel: Any,
    failed_record: Callable[..., dict],
) -> None:
    """Submit one job per spec, then collect records as jobs finish (cancel: scancel what is pending)."""
    ex = make_executor(kind, out / "slurm", settings, max((s.timeout_s for s in todo), default=0))
    jobs = {ex.submit(run_cell_job, spec.to_json(), str(out), nvml_interval_s): spec for spec in todo}
    pending = dict(jobs)
    while pending:
        if cancel.flag:
            for job, spec in pending.items():
                job.cancel(check=False)
                on_done(failed_record(spec, "canceled", f"job {job.job_id} canceled by a signal to the runner"))
            return
        for job in [j for j in pending if j.done()]:
            spec = pending.pop(job)
            try:
                on_done(json.loads(job.result()))
            except Exception as exc:  # the job itself died (node failure, Slurm time limit, ...)
                on_done(
                    failed_record(
                        spec,
                        "failed",
                        f"job {job.job_id} did not return a record: {type(exc).__name__}: {str(exc)[-1500:]}",
                    )
                )
        time.sleep(0.2)
