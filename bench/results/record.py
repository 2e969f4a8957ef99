"""One record schema: the `Status` enum, the `Record` dataclass and the one builder every record goes through
(success, unsupported, oom, failed by exception or signal, timeout, canceled, never started).

The README's schema table is generated from this module (`peft-bench list schema`) and a test keeps them equal.
"""

from __future__ import annotations

import math
import signal
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

from bench import SCHEMA_VERSION
from bench.errors import looks_like_oom
from bench.results.cell_result import CellResult, Status, json_safe
from bench.results.metrics import CORE, MetricSpec

FIT_CHECK_ERROR = "FitCheck"  # error.type of an `unsupported` record the GPU fit check made without running the cell


class CellSpec(Protocol):
    """What a record needs of the cell's spec (bench.suite.spec.RunSpec is one)."""

    @property
    def run_id(self) -> str: ...

    @property
    def spec_hash(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def _f(doc: str, default: Any = None, factory: Any = None) -> Any:
    if factory is not None:
        return field(default_factory=factory, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass
class Record:
    run_id: str = _f("the cell's id: `MODEL--TASK--METHOD--PRECISION--gaN[--gc][--sN]` (README: run-id rule)")
    status: Status = _f("`success`, `unsupported`, `oom`, `failed`, `timeout` or `canceled`", Status.FAILED)
    spec: dict[str, Any] = _f("the full resolved RunSpec", factory=dict)
    spec_hash: str | None = _f("hash of the spec values that change a measurement; resume reruns on a change")
    attempt: int | None = _f("1 for the first attempt of this run id in this out dir, then 2, 3, ...")
    error: dict[str, Any] | None = _f(
        "null, or `{type, message, exit_code?, signal?, traceback?, stderr_tail?}` (last 50 stderr lines)"
    )
    notes: list[str] = _f(
        "anything the runner saw that a reader should know (e.g. a process that had to be killed)", factory=list
    )
    metrics: dict[str, Any] = _f("flat, units in names (table below); null when not measured", factory=dict)
    missing_reason: dict[str, str] = _f("metric name -> why it is null", factory=dict)
    timings: dict[str, Any] = _f(
        "`time_<phase>_s` per child phase, `time_spawn_s`, `time_child_total_s`, `duration_s`", factory=dict
    )
    phases: dict[str, Any] = _f(
        "phase -> `{start_unix, end_unix, duration_s, peak_nvml_mib, peak_nvml_process_mib, energy_j}`",
        factory=dict,
    )
    env: dict[str, Any] = _f(
        "python, platform, host, git sha, packages, device, CPU/GPU facts, allocator config", factory=dict
    )
    dtypes: dict[str, Any] | None = _f(
        "base / trainable weight dtypes by element count, compute dtype, quantized layers"
    )
    task_info: dict[str, Any] | None = _f("metric name and direction, score range, synthetic or not")
    model_info: dict[str, Any] | None = _f("model class, source, random weights or not, config hash")
    loss_curve: list[float] | None = _f("loss per optimizer step (effective-batch mean)")
    score_curve: list[dict[str, Any]] | None = _f(
        "with eval_every: `{step, tokens, train_s, score}` at step 0 (score_before), every N steps and the last step "
        "(score_after); tokens and train_s are the real tokens and step time trained so far, warm-up included"
    )
    step_times_s: list[float] | None = _f(
        "time of each timed (post-warm-up) optimizer step (distributed cells: the slowest rank's)"
    )
    ranks: list[dict[str, Any]] | None = _f(
        "distributed cells: per rank, where it ran (`node`, `host`, `local_rank`), its peaks (`peak_rss_mib`, torch's; "
        "on GPUs its GPU's NVML training peaks and energy), mean step time, tokens, collectives (null: one process)"
    )
    nodes: list[dict[str, Any]] | None = _f(
        "cells over several nodes: per node, `{node, host, nvml_gpu_indices}` and what was measured there "
        "(`train_peak_rss_mib` of its process tree, its GPUs' `train_peak_nvml_mib` / `train_peak_nvml_process_mib`, "
        "`train_energy_j`); the headline memory is the largest node's, the energy the nodes' sum (null: one node)"
    )
    checkpoint: dict[str, Any] | None = _f(
        "what was saved: `{saved, dtype?, files, weight_bytes, total_bytes}` or `{error}`"
    )
    heavy_modules_loaded: list[str] | None = _f("which of peft, bitsandbytes, datasets, evaluate the cell imported")
    metric_specs: dict[str, Any] = _f(
        "metric name -> `{unit, doc, ...}` for metrics a plugin defines (the core ones are in the table below)",
        factory=dict,
    )
    child_pid: int | None = _f("PID of the cell process")
    runner_pid: int | None = _f("PID of the process that supervised the cell")
    launcher: str | None = _f("`spawn` or `fork-server`")
    gpu_index: int | None = _f("NVML index of the cell's GPU (null on CPU)")
    exit_code: int | None = _f("the cell process's exit status (negative: killed by that signal)")
    run_dir: str | None = _f("the cell's folder (spec, result, logs, checkpoint)")
    started_at: str | None = _f("ISO time the cell started")
    started_unix: float | None = _f("unix time the cell started")
    ended_unix: float | None = _f("unix time the cell ended")
    duration_s: float | None = _f("wall time of the cell as the runner saw it")
    schema_version: int = _f("version of this schema", SCHEMA_VERSION)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["status"] = str(self.status)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Any stored record (older schema versions too: their missing fields take the defaults)."""
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in data.items() if k in known})
        rec.status = Status(rec.status)
        return rec


@dataclass
class CellExit:
    """How the cell process ended, as the supervising process saw it."""

    exit_code: int | None = None  # None: no process ran, or it was killed without a status
    outcome: Status | None = None  # TIMEOUT / CANCELED decided by the supervisor; FAILED for a job that never ran
    message: str | None = None  # the supervisor's explanation of `outcome`
    stderr_tail: str = ""


def classify(child: CellResult | None, exit: CellExit) -> tuple[Status, dict[str, Any] | None]:
    """(status, error) from the child's own verdict and the supervisor's view of the exit."""
    if exit.outcome is not None:
        error: dict[str, Any] | None = {"type": str(exit.outcome), "message": exit.message or f"cell {exit.outcome}"}
        status = exit.outcome
    elif child is not None:
        status, error = child.status, child.error
    else:
        rc = exit.exit_code
        status = Status.OOM if looks_like_oom(exit.stderr_tail) else Status.FAILED
        if rc is not None and rc < 0:
            name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            error = {"type": "signal", "signal": -rc, "message": f"child killed by signal {-rc} ({name})"}
        else:
            error = {"type": "exit", "message": f"child exited with code {rc} without a result"}
    if error is not None:
        error = {**error, "exit_code": exit.exit_code, "stderr_tail": exit.stderr_tail}
    return status, error


def build_record(
    spec: CellSpec,
    child: CellResult | None,
    exit: CellExit,
    parent: dict[str, Any] | None = None,
) -> Record:
    """The one builder. `child`: the cell's result.json (None if it wrote none); `parent`: what the supervisor
    adds (metrics, missing_reason, phases, env, notes and provenance fields such as attempt, launcher, gpu_index,
    run_dir, started_at, duration_s)."""
    status, error = classify(child, exit)
    child, parent = child or CellResult(), dict(parent or {})
    ranks = with_gpu_figures(child.ranks, parent.pop("per_gpu", None))
    metrics = {**child.metrics, **parent.pop("metrics", {})}
    missing = {**child.missing_reason, **parent.pop("missing_reason", {})}
    for key, value in list(metrics.items()):
        if isinstance(value, float) and not math.isfinite(value):  # strict JSON, and a NaN is no measurement
            metrics[key] = None
            missing.setdefault(key, f"not finite ({value})")
    for key in [k for k, v in metrics.items() if v is not None]:
        missing.pop(key, None)
    rec = Record(
        run_id=spec.run_id,
        status=status,
        spec=spec.to_dict(),
        spec_hash=spec.spec_hash,
        error=error,
        notes=[*child.notes, *parent.pop("notes", [])],
        metrics=metrics,
        missing_reason=missing,
        timings={**child.timings, "duration_s": parent.get("duration_s")},
        phases=parent.pop("phases", None) or child.phases,
        env={**parent.pop("env", {}), **child.env},
        exit_code=exit.exit_code,
        dtypes=child.dtypes,
        task_info=child.task_info,
        model_info=child.model_info,
        loss_curve=json_safe(child.loss_curve),
        score_curve=json_safe(child.score_curve),
        step_times_s=child.step_times_s,
        ranks=ranks,
        checkpoint=child.checkpoint,
        heavy_modules_loaded=child.heavy_modules_loaded,
        child_pid=child.child_pid,
        metric_specs=child.metric_specs,
    )
    known = {f.name for f in fields(Record)}
    for key, value in parent.items():
        if key not in known:
            raise TypeError(f"build_record: unknown parent field {key!r}")
        setattr(rec, key, value)
    return rec


def with_gpu_figures(ranks: list[dict[str, Any]] | None, per_gpu: list[dict[str, Any]] | None, node: int = 0) -> Any:
    """A multi-GPU cell's rows: the rank with local rank i on `node` gets the NVML figures of the i-th GPU that node
    held (a row without `node`/`local_rank` is a one-node rank: node 0, local rank = rank). Every row is kept."""
    if not ranks or not per_gpu:
        return ranks
    out = []
    for i, row in enumerate(ranks):
        local = row.get("local_rank", row.get("rank", i))
        mine = row.get("node", 0) == node and local is not None and 0 <= local < len(per_gpu)
        out.append({**row, **per_gpu[local]} if mine else row)
    return out


def schema_markdown(plugin_specs: tuple[MetricSpec, ...] = ()) -> str:
    """The README's record-schema tables: top-level fields, then every metric (the core table, then the figures
    the installed plugins document)."""
    lines = [f"Record fields (schema_version {SCHEMA_VERSION}):", "", "| field | meaning |", "|---|---|"]
    lines += [f"| `{f.name}` | {f.metadata['doc']} |" for f in fields(Record)]
    lines += ["", "Metrics (`metrics.*`):", "", "| metric | unit | meaning |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.unit} | {s.doc} |" for s in CORE]
    if plugin_specs:
        lines += ["", "Metrics the built-in method and task plugins add:", "", "| metric | unit | meaning |"]
        lines += ["|---|---|---|", *[f"| `{s.name}` | {s.unit} | {s.doc} |" for s in plugin_specs]]
    return "\n".join(lines)
