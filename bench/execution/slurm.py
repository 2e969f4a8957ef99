"""Slurm fan-out through submitit: each cell is one job that runs `supervise_cell` on its node (the same code as
the local executor: child process, NVML over its tree) and returns the record. Only the submitting runner appends
to results.jsonl, so resume and the out-dir lock work across submissions.

Job states come from `squeue` / `scontrol` (no accounting database needed, so no sacct warnings); submitted job
ids are kept in OUT/slurm/jobs.json so a runner that was killed re-attaches to running jobs and collects finished
ones instead of resubmitting them. `submitit-local` runs the same jobs as local processes (no Slurm).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.execution.base import RunContext
from bench.execution.nodes import join_node, mark_ready, nnodes, run_other_node, take_in
from bench.execution.slurm_queue import SubmissionError, final_state, partition_has_gpus, queue_states, scancel
from bench.results.record import CellExit, Record, Status, build_record
from bench.results.rundir import RunDir, write_json_atomic
from bench.suite.executor import SlurmSettings
from bench.suite.spec import RunSpec

__all__ = ["SlurmExecutor", "SubmissionError", "run_cell_job"]


def run_cell_job(spec_json: str, run_dir: str, nvml_interval_s: float) -> str:
    """Entry point on the allocated node: one cell, supervised as the local executor does it.

    Slurm ends a job (scancel, time limit) with SIGTERM to its processes: the cell is stopped and cleaned up, and
    the job exits without a result, so the runner records Slurm's own verdict (canceled / timeout). A cell over
    several nodes has a task per node: the first supervises it, the others run and measure their node's ranks
    (bench.execution.nodes) and return nothing."""
    import signal

    from bench.env.facts import base_env
    from bench.execution.gpus import job_gpus
    from bench.execution.launchers import SpawnLauncher
    from bench.execution.supervise import CellJob, supervise_cell

    spec = RunSpec.from_json(spec_json)
    count = nnodes(spec)
    if count > 1 and (node := join_node()) > 0:
        run_other_node(spec, run_dir, node, nvml_interval_s)
        return ""  # the first node's task has the record
    backend, reason, slots = job_gpus(spec)  # a distributed GPU cell holds its node's `nproc` GPUs
    env = base_env()
    if backend is not None:
        env["gpu_driver"] = backend.driver()
    env["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    ended_by_slurm = []
    signal.signal(signal.SIGTERM, lambda *_: ended_by_slurm.append(True))  # replaces submitit's "bypass"
    job = CellJob(
        spec=spec,
        run_dir=RunDir(Path(run_dir)),
        launcher=SpawnLauncher(),
        slot=slots[0] if slots else None,
        backend=backend,
        nvml_reason=reason,
        nvml_interval_s=nvml_interval_s,
        env_parent=env,
        should_stop=lambda: bool(ended_by_slurm),
        progress=lambda line: print(line, flush=True),  # into the job's log (`squeue`/`sacct` show it is running)
        more_slots=tuple(slots[1:]),
        ready=(lambda: mark_ready(Path(run_dir))) if count > 1 else (lambda: None),
    )
    record = supervise_cell(job)
    if ended_by_slurm:
        os._exit(143)  # no result: Slurm's state (CANCELLED, TIMEOUT) is the verdict
    if count > 1:
        record = take_in(record, Path(run_dir), count)
    return json.dumps(record.to_dict(), default=str)


def never_ran(spec: RunSpec, ctx: RunContext, status: Status, message: str, job_id: str | None) -> Record:
    """The record of a cell whose job produced none (canceled, killed by Slurm, node failure, never started)."""
    parent = {"run_dir": str(ctx.out.run(spec.run_id).path), "runner_pid": os.getpid(), "env": {"slurm_job_id": job_id}}
    return build_record(spec, None, CellExit(None, status, message), parent)


class JobsFile:
    """OUT/slurm/jobs.json: run id -> {job_id, spec_hash} of the latest submission."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, dict[str, str]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, jobs: dict[str, dict[str, str]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, jobs)


class SlurmExecutor:
    def __init__(self, kind: str, settings: SlurmSettings, nvml_interval_s: float):
        self.name, self.settings, self.nvml_interval_s = kind, settings, nvml_interval_s
        self._gpu_partition: bool | None = None

    def gpus_for(self, spec: RunSpec) -> int:
        """GPUs to request per node: a distributed GPU cell's ranks per node; else the suite's setting, else one
        for cells that need a GPU (auto: if the partition has)."""
        if spec.distributed and spec.device != "cpu" and (spec.device == "cuda" or self._has_gpus()):
            return spec.distributed["nproc"]  # per node
        if self.settings.gpus_per_job is not None:
            return self.settings.gpus_per_job
        if spec.device == "cpu":
            return 0
        if spec.device == "cuda":
            return 1
        return 1 if self._has_gpus() else 0

    def local_gpus(self, spec: RunSpec) -> int:
        """GPUs a submitit-local job of this cell holds: none for a CPU cell or without GPUs, a distributed
        cell's ranks, else one (a cell on this machine's GPUs as a Slurm job would see its allocation)."""
        from bench.trackers import nvml

        backend, _ = nvml.open_backend()
        count = backend.device_count() if backend is not None else 0
        if spec.device == "cpu" or count == 0:
            return 0
        return min(count, spec.distributed["nproc"]) if spec.distributed else 1

    def _has_gpus(self) -> bool:
        if self._gpu_partition is None:
            self._gpu_partition = partition_has_gpus(self.settings.partition)
        return self._gpu_partition

    def time_min(self, spec: RunSpec) -> int:
        """The job's limit: the suite's time_min, else the cell's timeout plus a margin (minutes)."""
        if self.settings.time_min:
            return self.settings.time_min
        return int(spec.timeout_s // 60) + 1 + self.settings.time_margin_min

    def _executor(self, folder: Path, spec: RunSpec) -> Any:
        import submitit

        if self.name == "submitit-local":  # submitit makes CUDA_VISIBLE_DEVICES its first `gpus_per_node` GPUs
            ex = submitit.LocalExecutor(folder=str(folder))
            ex.update_parameters(timeout_min=self.time_min(spec), gpus_per_node=self.local_gpus(spec))
            return ex
        ex = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        nodes = spec.distributed.get("nnodes", 1) if spec.distributed else 1  # one task (an agent) per node
        params: dict[str, Any] = {"timeout_min": self.time_min(spec), "tasks_per_node": 1, "nodes": nodes}
        params["slurm_signal_delay_s"] = 0  # no pre-timeout signal: Slurm's own limit ends the job (-> timeout)
        if gpus := self.gpus_for(spec):
            params["gpus_per_node"] = gpus
        for key, name in (
            ("partition", "slurm_partition"),
            ("account", "slurm_account"),
            ("qos", "slurm_qos"),
            ("constraint", "slurm_constraint"),
            ("cpus_per_task", "cpus_per_task"),
            ("mem_gb", "mem_gb"),
        ):
            if getattr(self.settings, key) is not None:
                params[name] = getattr(self.settings, key)
        if spec.distributed and not gpus:  # a CPU rank per core at least
            params["cpus_per_task"] = max(params.get("cpus_per_task", 1), spec.distributed["nproc"])  # per node
        if self.settings.sbatch:
            params["slurm_additional_parameters"] = sbatch_options(self.settings.sbatch)
        ex.update_parameters(**params)
        return ex

    def run(self, specs: list[RunSpec], ctx: RunContext) -> None:
        if self.name == "submitit-local":
            return self._run_local(specs, ctx)
        jobs_file = JobsFile(ctx.out.slurm / "jobs.json")
        known = jobs_file.load()
        attached, to_submit = self._attach(specs, known, ctx)
        jobs = {**attached, **self._submit(to_submit, ctx)}
        known.update({s.run_id: {"job_id": str(j.job_id), "spec_hash": s.spec_hash} for j, s in jobs.items()})
        jobs_file.save(known)
        if attached:
            ctx.progress(f"re-attached to {len(attached)} job(s) of an earlier runner (not resubmitted)")
        ctx.progress(f"{len(jobs)} Slurm jobs; states from squeue/scontrol; logs in {ctx.out.slurm}")
        self._wait(jobs, ctx)

    def _attach(self, specs: list[RunSpec], known: dict, ctx: RunContext) -> tuple[dict, list[RunSpec]]:
        """Jobs of an earlier runner that are still queued or have a result: collect them, do not resubmit."""
        import submitit

        candidates = {
            s.run_id: known[s.run_id]["job_id"]
            for s in specs
            if known.get(s.run_id, {}).get("spec_hash") == s.spec_hash
        }
        states = queue_states(list(candidates.values()))
        attached, rest = {}, []
        for spec in specs:
            job_id = candidates.get(spec.run_id)
            job = submitit.SlurmJob(folder=ctx.out.slurm, job_id=job_id) if job_id else None
            if job is not None and (job_id in states or job.paths.result_pickle.exists()):
                attached[job] = spec
            else:
                rest.append(spec)
        return attached, rest

    def _submit(self, specs: list[RunSpec], ctx: RunContext) -> dict[Any, RunSpec]:
        """Submit every job; on a submission error cancel the ones already queued and raise SubmissionError."""
        jobs: dict[Any, RunSpec] = {}
        for spec in specs:
            ex = self._executor(ctx.out.slurm, spec)
            try:
                with quiet_stderr():  # sbatch's own messages: kept for the one-line error instead
                    job = ex.submit(
                        run_cell_job, spec.to_json(), str(ctx.out.run(spec.run_id).path), self.nvml_interval_s
                    )
            except Exception as exc:  # submitit.core.utils.FailedJobError from sbatch, or sbatch missing
                scancel([str(j.job_id) for j in jobs])
                raise SubmissionError(submission_message(exc, self.settings)) from None
            jobs[job] = spec
        return jobs

    def _wait(self, jobs: dict[Any, RunSpec], ctx: RunContext) -> None:
        pending = {str(j.job_id): (j, s) for j, s in jobs.items()}
        while pending:
            if ctx.should_stop():
                scancel(list(pending))
                for job_id, (_, spec) in pending.items():
                    ctx.on_record(
                        never_ran(
                            spec, ctx, Status.CANCELED, f"job {job_id} canceled by a signal to the runner", job_id
                        )
                    )
                return
            queued = queue_states(list(pending))
            for job_id in [j for j in pending if j not in queued]:
                job, spec = pending.pop(job_id)
                ctx.on_record(collect(job, spec, ctx))
            time.sleep(1.0)

    def _run_local(self, specs: list[RunSpec], ctx: RunContext) -> None:
        """One job at a time, as the local executor runs cells: jobs side by side on one machine would measure
        each other. A stop cancels the running job; cells not started have no record (a rerun runs them)."""
        ctx.progress(f"running {len(specs)} jobs with submitit's LocalExecutor, one at a time; logs in {ctx.out.slurm}")
        for spec in specs:
            if ctx.should_stop():
                return
            ex = self._executor(ctx.out.slurm, spec)
            job = ex.submit(run_cell_job, spec.to_json(), str(ctx.out.run(spec.run_id).path), self.nvml_interval_s)
            while not job.done():
                if ctx.should_stop():
                    job.cancel(check=False)
                    message = f"job {job.job_id} canceled by a signal to the runner"
                    ctx.on_record(never_ran(spec, ctx, Status.CANCELED, message, None))
                    return
                time.sleep(0.2)
            ctx.on_record(collect(job, spec, ctx))


def collect(job: Any, spec: RunSpec, ctx: RunContext) -> Record:
    """The record a finished job returned, or one made from Slurm's final state of a job that returned none."""
    job_id = str(job.job_id)
    first = job.task(0)  # the first node's task (a cell over several nodes has one task per node)
    if first.paths.result_pickle.exists():
        try:
            return Record.from_dict(json.loads(first.result()))
        except Exception as exc:  # the job's function raised: the pickle holds the traceback
            return never_ran(
                spec, ctx, Status.FAILED, f"job {job_id} failed: {type(exc).__name__}: {str(exc)[-1500:]}", job_id
            )
    status, message = final_state(job_id)
    return never_ran(spec, ctx, status, message, job_id)


@contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send this process's fd 2 to /dev/null for the duration (subprocesses that inherit it included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def sbatch_options(options: list[str]) -> dict[str, Any]:
    """["--qos=high", "--exclusive"] -> {"qos": "high", "exclusive": True} for submitit."""
    out: dict[str, Any] = {}
    for opt in options:
        key, sep, value = opt.lstrip("-").partition("=")
        out[key] = value if sep else True
    return out


def submission_message(exc: Exception, settings: SlurmSettings) -> str:
    text = " ".join(str(exc).split())
    where = ", ".join(f"{k}={getattr(settings, k)}" for k in ("partition", "account", "qos") if getattr(settings, k))
    return f"Slurm refused the job ({where or 'default partition'}): {text[-400:]}; nothing was left queued"
