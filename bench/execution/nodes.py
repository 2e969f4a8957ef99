"""A cell over several nodes (Slurm, `distributed.nnodes > 1`): one job, one task per node.

Every task learns its node and the c10d rendezvous on the first node from Slurm (submitit's job environment). The
first node's task supervises the cell as a one-node cell is supervised (bench.execution.supervise). Every other
node's task runs its node's torchrun agent and measures its node as the supervisor measures the first: NVML of the
GPUs the job gave it, the resident memory of its process tree, over the phases rank 0 marked in the shared run dir.
It writes `nodes/K/measured.json`; the first node's task waits for those files and takes them into the record:
each rank's row gets its own GPU's figures (matched by node and local rank, not by rank: torchrun numbers ranks by
rendezvous order), the headline memory is the largest node's, the energy the nodes' sum, and a node whose figures
never came makes those headline figures null with the reason (never a max or sum over the nodes that answered).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.env.facts import node_name
from bench.results.rundir import RunDir, write_json_atomic
from bench.suite.spec import RunSpec
from bench.trackers.multi_gpu import LARGEST, SUMMED, combine, rank_rows

MEASURED, READY = "measured.json", "ready.json"
WAIT_S = 120.0  # how long the first node waits for the others' figures after its own agent ended
RSS_LARGEST = ("peak_rss_tree_mib", "train_peak_rss_mib", "rss_at_train_start_mib", "train_rss_growth_mib")
NODE_KEYS = (*LARGEST, *SUMMED, *RSS_LARGEST)
ROW_KEYS = ("train_peak_rss_mib", "train_peak_nvml_process_mib", "train_peak_nvml_mib", "train_energy_j")


def nnodes(spec: RunSpec) -> int:
    return int(spec.distributed.get("nnodes", 1)) if spec.distributed else 1


def join_node() -> int:
    """This task's node in the job; sets the rendezvous every agent of the cell uses (the first node's host, a
    port from the job id) in this process's environment."""
    import submitit

    from bench.suite.defaults import NODE_RANK_ENV, RDZV_ENV, RDZV_ID_ENV

    job = submitit.JobEnvironment()
    port = 29400 + int(str(job.job_id).split("_")[0]) % 1000  # one rendezvous per job, on the first node
    os.environ.update(
        {NODE_RANK_ENV: str(job.node), RDZV_ENV: f"{job.hostnames[0]}:{port}", RDZV_ID_ENV: str(job.job_id)}
    )
    return int(job.node)


def node_file(run_dir: Path, node: int) -> Path:
    return Path(run_dir) / "nodes" / str(node) / MEASURED


def mark_ready(run_dir: Path) -> None:
    """The first node: the run dir is this job's attempt now (an earlier attempt's files moved away, spec.json
    written); the other nodes wait for this before they start their agents."""
    path = Path(run_dir) / "nodes" / READY
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {"job_id": os.environ.get("SLURM_JOB_ID"), "host": node_name()})


def wait_until_ready(run_dir: Path, timeout_s: float) -> bool:
    """Whether the first node marked the run dir ready for this job within `timeout_s` (its tasks start together,
    but an agent started before the first node has set up the attempt would read no spec, or a stale one)."""
    return _wait_for_json(Path(run_dir) / "nodes" / READY, time.monotonic() + timeout_s) is not None


def _wait_for_json(path: Path, deadline: float) -> dict[str, Any] | None:
    """The file's JSON once it is there and of this Slurm job (another job's is stale), or None at the deadline."""
    import json

    job = os.environ.get("SLURM_JOB_ID")
    while True:
        try:
            data = json.loads(path.read_text())
            if not job or data.get("job_id") in (None, job):
                return data
        except (OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def run_other_node(spec: RunSpec, run_dir: str, node: int, nvml_interval_s: float) -> None:
    """A node other than the first: once the first node has set up the run dir, its agent runs this node's ranks
    (killed with this task when Slurm ends the job); NVML and RSS watch them; what they measured goes to
    nodes/K/measured.json for the first node's record."""
    from bench.execution.gpus import job_gpus
    from bench.execution.supervise import attribute_phases, cell_env, node_trackers

    if not wait_until_ready(Path(run_dir), spec.distributed.get("timeout_s", 300)):
        print(f"node {node}: the first node did not set up {run_dir} in time; no agent started", flush=True)
        return
    backend, reason, slots = job_gpus(spec)
    token = f"{spec.run_id}:{os.environ.get('SLURM_JOB_ID')}:node{node}"
    env = cell_env(spec, slots[0] if slots else None, token, tuple(slots[1:]))
    agent = subprocess.Popen([sys.executable, "-m", "bench.cell.ranks", run_dir], env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(agent.pid, signal.SIGKILL))
    trackers = node_trackers(backend, tuple(slots), nvml_interval_s, reason)
    for tracker in trackers:
        tracker.start(agent.pid)
    code = agent.wait()
    for tracker in trackers:
        tracker.stop()
    try:
        os.killpg(agent.pid, signal.SIGKILL)  # whatever of this node's ranks outlived its agent
    except OSError:
        pass
    rd = RunDir(Path(run_dir))  # rank 0's phases and result, wherever rank 0 ran (the run dir is shared)
    _, measured = attribute_phases(trackers[:2], rd.read_result(), rd, time.time())  # CPU-load verdict: node 0's
    path = node_file(Path(run_dir), node)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        path,
        {
            "node": node,
            "host": node_name(),
            "job_id": os.environ.get("SLURM_JOB_ID"),
            "agent_exit_code": code,
            "nvml_gpu_indices": [s.index for s in slots],
            "metrics": measured.metrics,
            "missing": measured.missing,
            "per_gpu": rank_rows(measured, len(slots)),
            "notes": measured.notes,
        },
    )


def wait_for_nodes(run_dir: Path, count: int, wait_s: float) -> dict[int, dict[str, Any] | None]:
    """Every other node's measured.json of this job (None: not there within `wait_s`, shared by all nodes)."""
    deadline = time.monotonic() + wait_s
    return {node: _wait_for_json(node_file(run_dir, node), deadline) for node in range(1, count)}


def take_in(record: Any, run_dir: Path, count: int, wait_s: float = WAIT_S) -> Any:
    """The first node's record with every node's figures: rank rows matched by node and local rank, headline memory
    the largest node's, energy summed, `nodes` one row per node; a node that sent nothing nulls the headline figures
    it would have changed, with the reason."""
    from bench.results.record import with_gpu_figures

    others = wait_for_nodes(run_dir, count, wait_s)
    first = {
        "node": 0,
        "host": node_name(),
        "nvml_gpu_indices": record.env.get("nvml_gpu_indices")
        or ([record.gpu_index] if record.gpu_index is not None else []),
        "metrics": {k: record.metrics.get(k) for k in NODE_KEYS if k in record.metrics},
        "missing": {k: v for k, v in record.missing_reason.items() if k in NODE_KEYS},
    }
    nodes = [first]
    for node, data in others.items():
        if data is None:
            why = f"sent no figures within {wait_s:g} s (its task died or never started)"
            data = {"node": node, "host": None, "metrics": {}, "missing": {k: why for k in NODE_KEYS}}
            record.notes.append(f"node {node} {why}: the figures that need every node are null")
        nodes.append(data)
        record.ranks = with_gpu_figures(record.ranks, data.get("per_gpu"), node)
        record.notes += [f"node {node}: {note}" for note in data.get("notes", [])]
        if data.get("agent_exit_code"):
            said_by(record, node, data["agent_exit_code"], RunDir(Path(run_dir) / "nodes" / str(node)))
    keys = {k for n in nodes for k in n["metrics"]}
    metrics, missing = combine(
        [{k: n["metrics"].get(k) for k in keys} for n in nodes], [n["missing"] for n in nodes], "node", RSS_LARGEST
    )
    record.metrics.update({k: metrics[k] for k in keys})
    for key in keys:
        if metrics[key] is None:
            record.missing_reason[key] = missing.get(key, "no figure")
        else:
            record.missing_reason.pop(key, None)
    record.nodes = [node_row(n) for n in nodes]
    if any(n.get("nvml_gpu_indices") for n in nodes):
        record.metrics["nvml_gpus"] = sum(len(n.get("nvml_gpu_indices") or ()) for n in nodes)
    return record


def said_by(record: Any, node: int, code: int, out: RunDir) -> None:
    """A node whose agent failed: what it recorded (its first failing rank, its exit and error) goes into the
    record's notes and, where the cell failed, its error, since the first node's ranks may only have seen the
    collective break."""
    theirs = out.read_result()
    what = f"node {node}'s agent exited with code {code}"
    if theirs is not None and theirs.error:
        what += f": {theirs.error.get('message', '')}"
    record.notes.append(what)
    if record.error is not None:
        record.error.setdefault("nodes", {})[str(node)] = what


def node_row(node: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": node["node"],
        "host": node.get("host"),
        "nvml_gpu_indices": node.get("nvml_gpu_indices"),
        **{k: node["metrics"].get(k) for k in ROW_KEYS},
    }
