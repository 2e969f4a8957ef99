"""`peft-bench fit SUITE --axis seq_len|micro_batch`: for every cell, the largest value that trains without running
out of memory. Each probe is a real cell in its own process (a few steps, no evaluation, no save; recorded in
OUT/probes: a rerun reuses a probe's success or oom verdict): the search starts where the memory estimate says the
limit is, then steps out exponentially and closes in by bisection over the candidate grid (`--min`, `--max`,
`--step`).
`--memory-limit-mib` caps what each probe may allocate (bench/cell/probe.py): on a GPU below the card, on a CPU
what training allocates beyond the loaded model, data and method."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.suite.spec import RunSpec, method_label

AXES = ("seq_len", "micro_batch")
PROBE_STEPS, PROBE_WARMUP = 3, 1


@dataclass
class FitResult:
    cell: str
    model: str
    task: str
    method: str
    precision: str
    grad_ckpt: bool
    axis: str
    fits: int | None = None  # the largest candidate that trained
    fails: int | None = None  # the smallest candidate that ran out of memory
    probes: list[dict[str, Any]] = field(default_factory=list)  # value, status, peak memory, in probing order
    error: str | None = None  # a probe that failed for another reason than memory


def candidates(axis: str, low: int, high: int, step: int) -> list[int]:
    """The grid searched: multiples of `step` from `low` to `high` (micro_batch: powers of two when step is 0)."""
    if step <= 0:
        out, v = [], max(1, low)
        while v <= high:
            out.append(v)
            v *= 2
        return out
    return list(range(low, high + 1, step))


def probe_spec(spec: RunSpec, axis: str, value: int, limit_mib: float | None) -> RunSpec:
    """The cell at one candidate: trains a few steps, evaluates nothing, saves nothing."""
    label = spec.method_label or method_label(spec.method, spec.method_options)
    changes: dict[str, Any] = dict(
        suite=f"{spec.suite}-fit", method_label=f"{label}-{axis}{value}", steps=PROBE_STEPS, warmup_steps=PROBE_WARMUP,
        eval_before=False, save_checkpoint=False, inference=None, eval_every=0, lm_eval=None, probe=True,
        memory_limit_mib=None if limit_mib is None else float(limit_mib),
    )  # fmt: skip
    if axis == "seq_len":
        changes["seq_len"] = value
    else:
        changes["batch_size"] = value * spec.grad_accum
    return dataclasses.replace(spec, **changes)


def start_index(spec: RunSpec, axis: str, grid: list[int], limit_mib: float | None) -> int:
    """The last candidate whose memory estimate stays under the limit (the middle of the grid without one)."""
    from bench.plan.memory import ConfigCache, estimate_spec

    if not limit_mib:
        return len(grid) // 2
    configs, last = ConfigCache(), 0
    for i, value in enumerate(grid):
        est, _ = estimate_spec(probe_spec(spec, axis, value, None), configs)
        if est is None:
            return len(grid) // 2
        if est.total_mib - est.weights_mib > limit_mib:
            break
        last = i
    return last


def search(grid: list[int], start: int, probe: Callable[[int], str]) -> tuple[int | None, int | None, str | None]:
    """(index of the largest value that fits, index of the smallest that does not, a non-memory failure) by an
    exponential walk from `start`, then bisection; `probe(i)` returns a status."""
    ok, bad, step, i = None, None, 1, start
    while True:  # walk out until the boundary is bracketed (or the grid ends)
        status = probe(i)
        if status not in ("success", "oom"):
            return ok, bad, status
        if status == "success":
            ok = i if ok is None else max(ok, i)
            if bad is not None or i == len(grid) - 1:
                break
            i, step = min(len(grid) - 1, i + step), step * 2
        else:
            bad = i if bad is None else min(bad, i)
            if ok is not None or i == 0:
                break
            i, step = max(0, i - step), step * 2
    while ok is not None and bad is not None and bad - ok > 1:  # close in
        mid = (ok + bad) // 2
        status = probe(mid)
        if status not in ("success", "oom"):
            return ok, bad, status
        ok, bad = (mid, bad) if status == "success" else (ok, mid)
    return ok, bad, None


def _peak(rec: dict[str, Any]) -> float | None:
    m = rec.get("metrics") or {}
    for key in ("train_peak_nvml_process_mib", "torch_peak_allocated_mib", "train_rss_growth_mib"):
        if m.get(key) is not None:
            return m[key]
    return None


def fit_cell(spec: RunSpec, axis: str, grid: list[int], limit_mib: float | None, out: Path, say: Callable) -> FitResult:
    """The search for one cell; every probe a real cell run through the runner (recorded, resumable)."""
    from bench import runner
    from bench.results.store import latest_by_run_id, read_records

    result = FitResult(spec.run_id, spec.model, spec.task, spec.method_label or spec.method, spec.precision,
                       spec.grad_ckpt, axis)  # fmt: skip

    def probe(i: int) -> str:
        one = probe_spec(spec, axis, grid[i], limit_mib)
        rec = latest_by_run_id(read_records(out).records).get(one.run_id) if out.exists() else None
        if not rec or rec.get("spec_hash") != one.spec_hash or rec.get("status") not in ("success", "oom"):
            runner.run_specs([one], runner.RunOptions(out_dir=out, force=True), progress=lambda line: None)
            rec = latest_by_run_id(read_records(out).records)[one.run_id]
        result.probes.append({"value": grid[i], "status": rec["status"], "peak_mib": _peak(rec)})
        say(f"  {spec.run_id}: {axis} {grid[i]}: {rec['status']}")
        if rec["status"] not in ("success", "oom"):
            result.error = f"{axis} {grid[i]}: {rec['status']}: {(rec.get('error') or {}).get('message', '')[:200]}"
        return rec["status"]

    ok, bad, _ = search(grid, start_index(spec, axis, grid, limit_mib), probe)
    result.fits = grid[ok] if ok is not None else None
    result.fails = grid[bad] if bad is not None else None
    return result


def fit_table(results: list[FitResult]) -> str:
    """Markdown: per model x task, the largest value each method trains with (and the first that did not)."""
    from tabulate import tabulate

    lines = ["# peft-bench fit: what fits", ""]
    for (model, task), group in _groups(results).items():
        axis = group[0].axis
        rows = []
        for r in group:
            fits = "none" if r.fits is None else f"{r.fits:,}"
            fails = "-" if r.fails is None else f"{r.fails:,}"
            peak = next((p["peak_mib"] for p in r.probes if p["value"] == r.fits), None)
            rows.append([r.method, r.precision, "on" if r.grad_ckpt else "off", fits, fails, len(r.probes),
                         "-" if peak is None else f"{peak:,.0f}", r.error or ""])  # fmt: skip
        headers = ["method", "precision", "grad ckpt", f"max {axis}", "first OOM", "probes", "peak MiB at max", "error"]
        lines += [f"## model `{model}` · task `{task}`", "", tabulate(rows, headers, tablefmt="github"), ""]
    return "\n".join(lines)


def _groups(results: list[FitResult]) -> dict[tuple[str, str], list[FitResult]]:
    out: dict[tuple[str, str], list[FitResult]] = {}
    for r in results:
        out.setdefault((r.model, r.task), []).append(r)
    return out


def main(args: Any) -> int:
    """CLI: load the suite, search every cell, write OUT/fit.md and OUT/fit.json."""
    import sys

    from bench.suite.load import load_suite
    from bench.suite.matrix import expand

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)  # progress; stdout is the table

    specs = expand(load_suite(args.suite))
    if args.axis not in AXES:
        print(f"error: --axis {args.axis!r}: valid: {', '.join(AXES)}", file=sys.stderr)
        return 2
    step = args.step if args.step is not None else (64 if args.axis == "seq_len" else 0)
    low = args.min or (step or 1)
    grid = candidates(args.axis, low, args.max, step)
    if not grid:
        print(f"error: no candidates between --min {low} and --max {args.max} (step {step})", file=sys.stderr)
        return 2
    out = Path(args.out)
    say(f"fit {args.axis} for {len(specs)} cells over {len(grid)} candidates ({grid[0]} .. {grid[-1]}) -> {out}")
    results = [fit_cell(s, args.axis, grid, args.memory_limit_mib, out / "probes", say) for s in specs]
    out.mkdir(parents=True, exist_ok=True)
    (out / "fit.json").write_text(json.dumps([dataclasses.asdict(r) for r in results], indent=1))
    table = fit_table(results)
    (out / "fit.md").write_text(table)
    print(table)
    return 1 if any(r.error for r in results) else 0
