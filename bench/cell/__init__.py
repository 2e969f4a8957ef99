"""One isolated cell: RUN_DIR/spec.json in, RUN_DIR/result.json out. Knows nothing of the suite.

Run as `python -m bench.cell RUN_DIR` (spawn launcher) or called as `run_cell(RUN_DIR)` in a forked process
(fork-server launcher). The steps live in `bench.cell.steps`; this module walks their table, marks each phase, and turns
every outcome into a status inside result.json.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.errors import Diverged, Unsupported, looks_like_oom
from bench.results.cell_result import CellResult, Status
from bench.results.rundir import RunDir
from bench.suite.spec import RunSpec
from bench.trackers.in_cell import MaxRssTracker
from bench.trackers.phases import PhaseClock

LAUNCH_ENV = "PEFT_BENCH_LAUNCHED_AT"  # unix time the supervisor launched this cell (for time_spawn_s)
PARENT_ENV = "PEFT_BENCH_PARENT_PID"  # the process whose death must end this cell


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this cell when its parent (runner or fork server) dies, and exit at once if
    that already happened."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    expected = os.environ.get(PARENT_ENV)
    if expected and os.getppid() != int(expected):
        os._exit(70)


def run_cell(run_dir: Path) -> CellResult:
    """Run the cell described by run_dir/spec.json and write run_dir/result.json; return the result."""
    from bench.cell.steps import STEPS, Cell

    t_main = time.time()
    rd = RunDir(Path(run_dir))
    spec = RunSpec.read(rd.spec)
    out = own_dir(rd, spec)
    launched = os.environ.get(LAUNCH_ENV)
    result = CellResult(
        child_pid=os.getpid(), timings={"time_spawn_s": (t_main - float(launched)) if launched else None}
    )
    cell = Cell(spec=spec, run_dir=rd, clock=PhaseClock(out.phases), result=result)
    try:
        for step in STEPS:
            if not step.enabled(spec):
                step.skipped(cell)
                continue
            step.before(cell)
            with cell.clock.phase(step.phase):
                step.run(cell)
        result.status = Status.SUCCESS
    except BaseException as exc:  # noqa: BLE001 - every failure must become a record
        _classify(result, exc)
    _finish(cell, t_main, out)
    return result


def own_dir(rd: RunDir, spec: RunSpec) -> RunDir:
    """Where this process writes its result and phase marks: the run dir, or RUN_DIR/ranks/K for rank K > 0 of a
    distributed cell (rank 0 writes the cell's result)."""
    from bench.cell.distributed import rank_of_env

    rank = rank_of_env() if spec.distributed else None
    if not rank:
        return rd
    out = RunDir(rd.path / "ranks" / str(rank))
    out.path.mkdir(parents=True, exist_ok=True)
    return out


def _classify(result: CellResult, exc: BaseException) -> None:
    if isinstance(exc, Unsupported):
        result.status = Status.UNSUPPORTED
        result.error = {"type": "Unsupported", "message": str(exc)}
        return
    if isinstance(exc, Diverged):
        result.loss_curve = exc.losses
    text = f"{type(exc).__name__}: {exc}"
    oom = looks_like_oom(text)
    result.status = Status.CANCELED if isinstance(exc, KeyboardInterrupt) else Status.OOM if oom else Status.FAILED
    result.error = {
        "type": type(exc).__name__,
        "message": str(exc)[:2000],
        "traceback": traceback.format_exc()[-8000:],
    }
    traceback.print_exc()


def _finish(cell: Any, t_main: float, out: RunDir) -> None:
    result = cell.result
    result.phases = cell.clock.spans
    result.timings.update(cell.clock.timings())
    if "time_eval_s" in result.timings:
        result.metrics["eval_time_s"] = result.timings["time_eval_s"]
    rss = MaxRssTracker()
    rss.stop()
    result.metrics.update(rss.attribute().metrics)
    from bench.cell.steps import heavy_modules

    late = sorted(set(heavy_modules()) - set(result.heavy_modules_loaded or []))
    if late and result.heavy_modules_loaded is not None:
        result.notes.append(f"imported after the import phase (their time is in a later phase): {late}")
    if result.heavy_modules_loaded is None:
        result.heavy_modules_loaded = heavy_modules()
    result.timings["time_child_total_s"] = time.time() - t_main
    out.write_result(result)


def run_dir_argument(argv: list[str] | None, module: str) -> Path | None:
    """The one RUN_DIR argument of `python -m MODULE RUN_DIR` (None after printing the usage), and this process
    set to die with its parent: what every cell process entry point starts with."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {module} RUN_DIR", file=sys.stderr)
        return None
    die_with_parent()
    return Path(argv[0])


def main(argv: list[str] | None = None) -> int:
    from bench.cell.distributed import rank_of_env

    run_dir = run_dir_argument(argv, "bench.cell")
    if run_dir is None:
        return 2
    result = run_cell(run_dir)
    sys.stdout.flush()
    sys.stderr.flush()
    # a rank that did not succeed exits 1, so torchrun ends the others instead of leaving them in a collective
    # (only torchrun's ranks have RANK: the supervisor strips it from every cell's environment)
    failed_rank = rank_of_env() is not None and result.status != Status.SUCCESS
    os._exit(1 if failed_rank else 0)  # result.json is written: no interpreter teardown (threads, CUDA) can hang
