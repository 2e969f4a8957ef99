"""GPU-node features tested on CPU: one cell per GPU at a time over fake NVML devices, MFU table."""

import json
import threading
import time

import pytest

import fake_nvml
from bench.env.facts import bf16_peak_flops
from bench.execution.scheduler import execute
from conftest import cli, make_suite, read_jsonl


def test_scheduler_never_runs_two_items_on_one_slot_and_runs_each_once():
    active: dict[int, int] = {s: 0 for s in range(4)}
    seen: list[int] = []
    clash = []
    lock = threading.Lock()

    def run(item, slot):
        with lock:
            active[slot] += 1
            clash.append(active[slot] > 1)
        time.sleep(0.01 * (item % 3))
        with lock:
            active[slot] -= 1
        return item

    execute(list(range(40)), [0, 1, 2, 3], run, lambda item, slot: seen.append(item), lambda: False)
    assert sorted(seen) == list(range(40)) and not any(clash)


def test_scheduler_stops_taking_work_when_told():
    done = []
    execute(list(range(10)), [0], lambda i, s: i, lambda i, s: done.append(i), lambda: len(done) >= 3)
    assert done == [0, 1, 2]


@pytest.mark.slow
def test_cells_spread_over_the_chosen_fake_gpus_one_at_a_time(tmp_path):
    fake = {"devices": [{"name": f"FakeGPU{i}", "used_mib": 100 * i, "processes": []} for i in range(4)]}
    path = make_suite(tmp_path, {"method": [{"name": "lora", "r": r} for r in (1, 2, 3, 4)]}, steps=2)
    res = cli(
        "run",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--gpus",
        "1,3",
        "--launcher",
        "spawn",
        "--no-fit-check",
        env=fake_nvml.env(fake),
    )
    assert res.returncode == 0, res.stderr
    recs = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert sorted(r["run_id"] for r in recs) == sorted({r["run_id"] for r in recs}) and len(recs) == 4
    assert all(r["status"] == "success" for r in recs)
    by_gpu: dict[int, list] = {}
    for r in recs:
        assert r["env"]["cuda_visible_devices"] == f"GPU-fake-{r['gpu_index']}"
        assert r["env"]["nvml_gpu_name"] == f"FakeGPU{r['gpu_index']}"
        assert r["metrics"]["baseline_nvml_mib"] == 100 * r["gpu_index"]
        by_gpu.setdefault(r["gpu_index"], []).append((r["started_unix"], r["ended_unix"]))
    assert set(by_gpu) == {1, 3}  # both chosen GPUs, no other
    for spans in by_gpu.values():
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))


def test_bf16_peak_table_matches_gpu_names():
    assert bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak_flops("Some Unknown GPU") is None


def test_mfu_formula_and_missing_reasons():
    from bench.cell.measure import utilisation

    m, miss = {"model_flops_per_token": 6e9, "hardware_flops_per_token": 4e9, "tokens_per_s": 10_000.0}, {}
    utilisation(m, miss, {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}, "bfloat16")
    assert m["mfu"] == pytest.approx(6e9 * 1e4 / 989.4e12) and "mfu" not in miss
    assert m["hfu"] == pytest.approx(4e9 * 1e4 / 989.4e12)
    utilisation(m, miss, {"device": "cuda", "gpu_name": "NVIDIA H100 80GB HBM3"}, "float32")
    assert m["mfu"] == pytest.approx(6e9 * 1e4 / 66.9e12)  # fp32 cells against the fp32 peak
    m, miss = {"model_flops_per_token": 60.0, "hardware_flops_per_token": 40.0, "tokens_per_s": 1.0}, {}
    utilisation(m, miss, {"device": "cpu"}, "float32")
    assert m["mfu"] is None and "GPU" in miss["mfu"] and m["hfu"] is None


@pytest.mark.slow
def test_submitit_local_executor_runs_a_suite_and_resumes(tmp_path):
    data = {
        "name": "sl",
        "defaults": {
            "steps": 3,
            "warmup_steps": 1,
            "batch_size": 4,
            "seq_len": 16,
            "timeout_s": 300,
            "task": {"name": "toy-cls", "n_train": 16, "n_eval": 8},
            "precision": "fp32",
            "grad_accum": 1,
            "model": "tiny-bert",
        },
        "matrix": {"method": ["full", "bitfit"]},
        "executor": {"kind": "submitit-local"},
    }
    import yaml

    path = tmp_path / "sl.yaml"
    path.write_text(yaml.safe_dump(data))
    res = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr + res.stdout
    recs = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert len(recs) == 2 and all(r["status"] == "success" for r in recs), [r.get("error") for r in recs]
    assert all(r["metrics"]["trainable_params"] > 0 and r["loss_curve"] for r in recs)
    first, second = sorted(recs, key=lambda r: r["started_unix"])
    assert first["ended_unix"] <= second["started_unix"]  # one job at a time: side by side they measure each other
    assert (tmp_path / "out" / "slurm").is_dir()
    res = cli("run", str(path), "--out", str(tmp_path / "out"))  # resume across submissions: nothing to redo
    assert "resume: 2 of 2" in res.stdout and len(read_jsonl(tmp_path / "out" / "results.jsonl")) == 2


def test_bad_executor_block_is_rejected(tmp_path):
    import yaml

    from bench.errors import SuiteError
    from bench.suite.load import load_suite

    data = {
        "name": "x",
        "defaults": {"task": "toy-cls", "precision": "fp32", "grad_accum": 1, "model": "tiny-bert", "method": "full"},
        "matrix": {},
        "executor": {"kind": "slurmm", "partiton": "gpu"},
    }
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    text = "\n".join(err.value.problems)
    assert "executor.kind: 'slurmm'" in text and "did you mean 'partition'" in text


@pytest.mark.slow
def test_selfcheck_compares_harness_with_an_independent_loop_on_cpu(tmp_path):
    res = cli("selfcheck", "--out", str(tmp_path), "--steps", "8", "--methods", "lora", "--rounds", "1")
    assert res.returncode == 0, res.stderr
    assert "lora: step time bare/harness" in res.stdout and "not gated" in res.stdout
    data = json.loads(res.stdout[: res.stdout.rindex("}") + 1])
    row = data["methods"]["lora"]
    assert row["bare_step_p50_s"] > 0 and row["harness_step_p50_s"] > 0
    assert row["harness_distinct_batch_shapes"] == 1  # fixed-shape batches, as in the bare loop
    assert "memory_diff_pct" not in row  # no NVML here: no memory comparison, not a fake one


def test_the_bare_loop_trains_every_selfcheck_method_under_bf16():
    """The GPU self-check runs LoRA, IA3 and full fine-tuning in bf16: peft's input-casting helper failed on IA3."""
    import importlib.util

    from bench.selfcheck import BARELOOP, METHODS, bare_job, cell_spec

    spec = importlib.util.spec_from_file_location("bareloop", BARELOOP)
    bare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bare)
    for method in METHODS:
        out = bare.run(bare_job(cell_spec("tiny-llama", method, "bf16", 2, 2, 8, "cpu")))
        assert len(out["step_times_s"]) == 1 and out["final_loss"] > 0, method


def test_selfcheck_reference_shares_no_code_with_the_harness():
    import ast
    from pathlib import Path

    tree = ast.parse((Path(__file__).resolve().parents[1] / "bench" / "selfcheck" / "bareloop.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    allowed = {"json", "sys", "time", "torch", "transformers", "peft", "peft.helpers", "__future__"}
    assert imported <= allowed, imported
