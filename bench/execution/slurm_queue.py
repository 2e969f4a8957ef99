"""Slurm's view of jobs without an accounting database: the queue (`squeue`), a finished job's final state
(`scontrol show job`, kept for MinJobAge), cancellation, and whether a partition has GPUs."""

from __future__ import annotations

import subprocess

from bench.results.record import Status

# final Slurm job states -> record status
STATES = {
    "CANCELLED": Status.CANCELED,
    "TIMEOUT": Status.TIMEOUT,
    "DEADLINE": Status.TIMEOUT,
    "OUT_OF_MEMORY": Status.OOM,
    "NODE_FAIL": Status.FAILED,
    "BOOT_FAIL": Status.FAILED,
    "FAILED": Status.FAILED,
    "PREEMPTED": Status.FAILED,
    "COMPLETED": Status.FAILED,  # completed without returning a record
}


class SubmissionError(RuntimeError):
    """sbatch refused a job (bad partition, account, ...): a one-line error, exit 2."""


def _run(cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def queue_states(job_ids: list[str]) -> dict[str, str]:
    """job id -> state of the given jobs still in the queue (pending, running, completing)."""
    if not job_ids:
        return {}
    res = _run(["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)])
    if res.returncode != 0 and "Invalid job id" not in res.stderr:
        raise RuntimeError(f"squeue failed: {res.stderr.strip()[:300]}")
    states = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def final_state(job_id: str) -> tuple[Status, str]:
    """(status, message) of a job that left the queue without a result."""
    res = _run(["scontrol", "show", "job", "-o", job_id])
    fields = dict(kv.split("=", 1) for kv in res.stdout.split() if "=" in kv)
    state = fields.get("JobState")
    if state is None:
        return Status.FAILED, f"job {job_id} left the queue without a result; Slurm no longer knows its state"
    reason = fields.get("Reason", "None")
    limit = fields.get("TimeLimit", "?")
    if state == "TIMEOUT":
        message = f"job {job_id} was killed by Slurm at its time limit ({limit})"
    elif state == "CANCELLED":
        message = f"job {job_id} was cancelled (scancel or an administrator)"
    else:
        message = f"job {job_id} ended {state} without a record (reason: {reason}, exit {fields.get('ExitCode', '?')})"
    return STATES.get(state, Status.FAILED), message


def scancel(job_ids: list[str]) -> None:
    if job_ids:
        _run(["scancel", *job_ids])


def partition_has_gpus(partition: str | None) -> bool:
    """True when the partition's nodes offer a GPU generic resource."""
    cmd = ["sinfo", "-h", "-o", "%G"] + (["-p", partition] if partition else [])
    try:
        res = _run(cmd)
    except (OSError, subprocess.SubprocessError):
        return False
    return "gpu" in res.stdout
