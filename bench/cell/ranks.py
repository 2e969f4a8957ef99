"""`python -m bench.cell.ranks RUN_DIR`: the agent of a distributed cell. It dies with the runner
(PR_SET_PDEATHSIG), starts the cell's ranks through torchrun's own entry (`torch.distributed.run`, no restarts:
every rank is a `python -m bench.cell RUN_DIR` that dies with this agent), and when a rank fails it makes sure the
cell's result names that rank, its exit and its own error: torchrun has ended the other ranks. One node: torchrun's
standalone rendezvous; over several (Slurm), one agent per node joins a c10d rendezvous on the first node.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from bench.cell import PARENT_ENV, run_dir_argument
from bench.results.cell_result import CellResult, Status
from bench.results.rundir import RunDir
from bench.suite.defaults import NODE_RANK_ENV, RDZV_ENV, RDZV_ID_ENV, DistributedOptions
from bench.suite.spec import RunSpec

MONITOR_S = 0.2  # how often torchrun checks its ranks (a dead rank ends the cell within this)


def torchrun_args(spec: RunSpec, run_dir: Path) -> list[str]:
    opts = DistributedOptions(**spec.distributed)
    return [
        *rendezvous_args(opts),
        f"--nproc-per-node={opts.nproc}",
        "--max-restarts=0",
        f"--monitor-interval={MONITOR_S}",
        "--module",
        "bench.cell",
        str(run_dir),
    ]


def rendezvous_args(opts: DistributedOptions) -> list[str]:
    """One node: torchrun's standalone rendezvous. Several: c10d at the endpoint the job names, this node's rank."""
    if opts.nnodes == 1:
        return ["--standalone", "--nnodes=1"]
    missing = [k for k in (NODE_RANK_ENV, RDZV_ENV) if not os.environ.get(k)]
    if missing:
        raise RuntimeError(
            f"a cell over {opts.nnodes} nodes needs {' and '.join(missing)} (the Slurm job sets them on every node)"
        )
    return [
        f"--nnodes={opts.nnodes}",
        f"--node-rank={int(os.environ[NODE_RANK_ENV])}",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={os.environ[RDZV_ENV]}",
        f"--rdzv-id={os.environ.get(RDZV_ID_ENV, 'peft-bench')}",
        f"--rdzv-conf=join_timeout={int(opts.timeout_s)}",
    ]


def describe_failure(rank: int, failure: Any) -> str:
    code = failure.exitcode
    if code < 0:
        try:
            how = f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            how = f"was killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    return f"rank {rank} (pid {failure.pid}) {how}; torchrun ended the other ranks"


def record_failure(rd: RunDir, out: RunDir, failures: dict[int, Any]) -> None:
    """The cell's result (`out`: the run dir, or this node's folder on a node other than the first) when a rank
    failed: rank 0's own result where it wrote one (a note names the rank), else a failed result with the first
    failing rank, its exit and the error that rank recorded itself (under the run dir's ranks/)."""
    rank, failure = min(failures.items(), key=lambda kv: kv[1].timestamp)
    what = describe_failure(rank, failure)
    result = out.read_result()
    if result is not None:  # rank 0 finished: its verdict stands (it failed itself, or a rank failed after it)
        if result.status == Status.SUCCESS or not result.error:
            result.notes.append(what)
            out.write_result(result)
        return
    error: dict[str, Any] = {"type": "rank_failed", "rank": rank, "exit_code": failure.exitcode, "message": what}
    theirs = RunDir(rd.path / "ranks" / str(rank)).read_result() if rank else None
    if theirs is not None:
        error["message"] = f"{what}: {(theirs.error or {}).get('message', theirs.status)}"
        error["rank_error"] = theirs.error
    out.write_result(CellResult(status=Status.FAILED, error=error, child_pid=failure.pid))


def main(argv: list[str] | None = None) -> int:
    run_dir = run_dir_argument(argv, "bench.cell.ranks")
    if run_dir is None:
        return 2
    rd = RunDir(run_dir)
    spec = RunSpec.read(rd.spec)
    node = int(os.environ.get(NODE_RANK_ENV) or 0)
    out = rd if node == 0 else RunDir(rd.path / "nodes" / str(node))  # the cell's result is the first node's
    os.environ[PARENT_ENV] = str(os.getpid())  # the ranks' parent: they die with this agent
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(torchrun_args(spec, rd.path)))
    except ChildFailedError as exc:
        out.path.mkdir(parents=True, exist_ok=True)
        record_failure(rd, out, exc.failures)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
