"""How a cell ended, as a record: the child's result.json merged with the parent's view (exit status or signal,
timeout/cancel, NVML peaks, stderr tail), and the one-line progress summary of a record."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import nvml
from bench.envinfo import base_env
from bench.errors import looks_like_oom
from bench.spec import RunSpec

STDERR_TAIL_LINES = 50


def job_failure_record(spec: RunSpec, out: Path, status: str, message: str) -> dict[str, Any]:
    """A record for a cell whose job never produced one (canceled before it ran, or the job died)."""
    return {
        "run_id": spec.run_id,
        "attempt": None,
        "status": status,
        "spec": json.loads(spec.to_json()),
        "error": {"type": status, "message": message},
        "metrics": {},
        "missing_reason": {},
        "timings": {},
        "env": base_env(),
        "run_dir": str(out / "runs" / spec.run_id),
        "runner_pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": None,
    }


def stderr_tail(run_dir: Path, lines: int = STDERR_TAIL_LINES) -> str:
    try:
        text = (run_dir / "stderr.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


def build_record(
    spec: RunSpec,
    run_dir: Path,
    attempt: int,
    rc: int | None,
    outcome: str | None,
    peaks: nvml.NvmlPeaks,
    started_at: str,
    duration: float,
    env_parent: dict[str, Any],
    launcher: str,
    gpu_index: int | None,
) -> dict[str, Any]:
    """Merge the child's result.json (if any) with the parent's view: exit, NVML peaks, stderr tail."""
    try:
        child = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        child = {}
    tail = stderr_tail(run_dir)
    error = child.get("error")
    if outcome:
        status = outcome
        error = {
            "type": outcome,
            "message": f"cell {outcome}"
            + (f" after {spec.timeout_s:g} s" if outcome == "timeout" else " by a signal to the runner"),
        }
    elif child.get("status"):
        status = child["status"]
    else:
        status = "oom" if looks_like_oom(tail) else "failed"
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
            error = {"type": "signal", "signal": -rc, "message": f"child killed by signal {-rc} ({sig})"}
        else:
            error = {"type": "exit", "exit_code": rc, "message": f"child exited with code {rc} without a result"}
    if error is not None:
        error = {**error, "exit_code": rc, "stderr_tail": tail}
    metrics = dict(child.get("metrics", {}))
    missing = dict(child.get("missing_reason", {}))
    peak = asdict(peaks)
    missing.update(peak.pop("missing_reason"))
    peak.pop("samples")
    metrics.update(peak)
    metrics["nvml_samples"] = peaks.samples
    if peaks.energy_j is not None and metrics.get("timed_tokens"):
        # whole-cell energy (load, eval, save included) per timed training token: an upper bound
        metrics["energy_per_token_j"] = peaks.energy_j / metrics["timed_tokens"]
    else:
        metrics["energy_per_token_j"] = None
        missing["energy_per_token_j"] = missing.get("energy_j") or "no timed tokens"
    timings = dict(child.get("timings", {}))
    timings["duration_s"] = duration
    return {
        "run_id": spec.run_id,
        "attempt": attempt,
        "status": status,
        "spec": json.loads(spec.to_json()),
        "error": error,
        "metrics": metrics,
        "missing_reason": missing,
        "timings": timings,
        "env": {**env_parent, **child.get("env", {})},
        "dtypes": child.get("dtypes"),
        "task_info": child.get("task_info"),
        "model_info": child.get("model_info"),
        "loss_curve": child.get("loss_curve"),
        "heavy_modules_loaded": child.get("heavy_modules_loaded"),
        "child_pid": child.get("child_pid"),
        "runner_pid": os.getpid(),
        "launcher": launcher,
        "gpu_index": gpu_index,
        "exit_code": rc,
        "run_dir": str(run_dir),
        "started_at": started_at,
        "duration_s": duration,
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def progress_line(i: int, n: int, rec: dict[str, Any], cell_s: float, eta_s: float) -> str:
    m = rec["metrics"]
    parts = [f"[{i}/{n}]", rec["run_id"], rec["status"]]
    if rec["status"] == "success":
        parts += [
            f"{_fmt(m.get('tokens_per_s'), ',.0f')} tok/s",
            f"score {_fmt(m.get('score_before'), '.3f')}->{_fmt(m.get('score_after'), '.3f')}",
            f"trainable {_fmt(m.get('trainable_params'), ',')}",
        ]
        if m.get("peak_nvml_mib") is not None:
            parts.append(f"peak {m['peak_nvml_mib']:,.0f} MiB")
    elif rec.get("error"):
        parts.append(str(rec["error"].get("message", ""))[:100].replace("\n", " "))
    parts += [f"{cell_s:.1f}s", f"ETA {int(eta_s // 60)}:{int(eta_s % 60):02d}"]
    return "  ".join(parts)
