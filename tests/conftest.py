"""Shared helpers: suite files, CLI runs in subprocesses, and the fault-injecting test plugin on a path."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_SRC = Path(__file__).parent / "plugins"
sys.path.insert(0, str(Path(__file__).parent / "fakes"))  # test fakes, reached through their injection points
# One OpenMP thread per process (cells inherit it): the workers already share the cores, and on a loaded 2-core
# machine two-thread cells spin-wait on each other (the tiny-llama smoke cells went from 5 s to over a minute each).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker per core plus one. The Slurm tests spend most of their time waiting for Slurm (its
    time-limit check alone takes 60-90 s), so the extra worker keeps both cores busy: 405 s -> 333 s on 2 cores."""
    return len(os.sched_getaffinity(0)) + 1


# The files that take longest (mostly waiting: Slurm's time-limit check, timeouts, killed processes) start first, so
# that no worker is left with one of them at the end while the others idle (xdist hands out files in this order).
LONG_FIRST = ("test_slurm", "test_reliability", "test_distributed", "test_record_trust", "test_launchers", "test_fit")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        stem = Path(str(item.fspath)).stem
        return LONG_FIRST.index(stem) if stem in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: the order within a file and among the others is kept


BASE_DEFAULTS = {
    "steps": 4,
    "warmup_steps": 1,
    "batch_size": 4,
    "seq_len": 16,
    "lr": 1e-3,
    "timeout_s": 120,
    "task": {"name": "toy-cls", "n_train": 32, "n_eval": 16},
    "precision": "fp32",
    "grad_accum": 1,
    "model": "tiny-llama",
}


def make_suite(tmp_path: Path, matrix: dict[str, Any], name: str = "t", **defaults: Any) -> Path:
    data = {
        "name": name,
        "defaults": {**{k: v for k, v in BASE_DEFAULTS.items() if k not in matrix}, **defaults},
        "matrix": matrix,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    """`peft-bench ARGS` in a subprocess; runs skip the wall-time forecast (its probe and model counts cost seconds;
    tests/test_forecast.py covers it)."""
    full_env = {**os.environ, **(env or {})}
    if args and args[0] == "run" and "--dry-run" not in args:
        args = (*args, "--no-forecast")
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, env=full_env, timeout=timeout, **kw
    )


def fault_plugin_path(tmp_path: Path) -> Path:
    """A directory holding the fault plugin package plus a dist-info whose entry points register it."""
    site = tmp_path / "plugin-site"
    if not site.exists():
        site.mkdir()
        pkg = site / "faultplugin"
        pkg.mkdir()
        for f in (PLUGIN_SRC / "faultplugin").glob("*.py"):
            (pkg / f.name).write_text(f.read_text())
        dist = site / "faultplugin-0.0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: faultplugin\nVersion: 0.0.1\n")
        names = ["oom", "sleep", "slow", "crash", "patch", "check", "stray", "linger", "badsave"]
        eps = "\n".join(f"fault-{n} = faultplugin.methods:Fault{n.capitalize()}" for n in names)
        (dist / "entry_points.txt").write_text(f"[peft_bench.methods]\n{eps}\n")
    return site


@pytest.fixture
def fault_env(tmp_path, monkeypatch):
    """Env for subprocesses (and this process) in which the fault plugin is installed."""
    from bench import registry

    site = fault_plugin_path(tmp_path)
    monkeypatch.syspath_prepend(str(site))
    registry.clear()
    yield {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    registry.clear()


SPEC_BASE = {
    "suite": "t",
    "model": "tiny-llama",
    "task": "toy-cls",
    "method": "full",
    "precision": "fp32",
    "grad_accum": 1,
    "batch_size": 8,
    "steps": 4,
    "warmup_steps": 1,
    "seq_len": 16,
    "lr": 1e-3,
    "seed": 0,
    "timeout_s": 120,
    "task_options": {"n_train": 32, "n_eval": 16},
}


def run_cell_inproc(run_dir: Path, **overrides: Any) -> dict[str, Any]:
    """Run one cell in this process (no spawn cost) through the child's own entry point."""
    from bench.cell import run_cell

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "spec.json").write_text(json.dumps({**SPEC_BASE, **overrides}))
    return run_cell(run_dir).to_dict()


def unexplained_nulls(rec: dict[str, Any]) -> list[str]:
    """Metrics of a record that are null without a `missing_reason` (the promise: null with the reason, never 0)."""
    reasons = rec.get("missing_reason") or {}
    return sorted(k for k, v in (rec.get("metrics") or {}).items() if v is None and not reasons.get(k))


WORDS = "red blue green cat dog sun moon tree fish bird".split()


def mc_task(tmp_path, n=24):
    """A multiple-choice task YAML over a local JSONL, in its own include_path."""
    rng = random.Random(0)
    items = []
    for _ in range(n):
        choices = rng.sample(WORDS, 4)
        items.append({"question": f"which comes first : {' '.join(choices)} ?", "choices": choices, "answer": 0})
    data = tmp_path / "items.jsonl"
    data.write_text("\n".join(json.dumps(i) for i in items))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "mc.yaml").write_text(
        f"task: local_mc\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "{{question}}"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\nmetric_list:\n  - metric: acc\n'
    )
    return items, str(tasks)
