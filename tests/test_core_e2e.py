"""End to end: a suite runs as isolated subprocess cells and leaves one honest record per cell."""

from pathlib import Path

import pytest

from bench.results import store as records
from bench.runner import RunOptions, run_specs
from bench.suite.load import expand, load_suite
from conftest import cli, make_suite, read_jsonl

pytestmark = pytest.mark.slow


TARGETS = ["q_proj", "v_proj", "query", "value"]
LORA = {"name": "lora", "r": 2, "target_modules": TARGETS}


def expected_lora_trainable(model_name: str, r: int) -> tuple[int, int]:
    """Independent count: r*(in+out) per targeted Linear + the trained head copy; and the model's total."""
    import torch
    import transformers

    from bench.models.configs import CONFIGS
    from bench.models.loading import auto_class

    cfg = transformers.AutoConfig.for_model(**CONFIGS[model_name], num_labels=2)
    model = auto_class("seq_cls").from_config(cfg)
    total = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            if name.split(".")[-1] in ("score", "classifier"):
                total += sum(p.numel() for p in mod.parameters())
            elif name.split(".")[-1] in TARGETS:
                total += r * (mod.in_features + mod.out_features)
    return total, sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def core_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("core")
    path = make_suite(tmp, {"model": ["tiny-llama", "tiny-bert"], "method": ["full", LORA], "grad_accum": [1, 2]})
    out = tmp / "out"
    res = cli("run", str(path), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return path, out, res


def test_suite_runs_eight_success_cells_with_correct_trainable_params(core_run):
    _, out, res = core_run
    recs = read_jsonl(out / "results.jsonl")
    assert len(recs) == 8 and all(r["status"] == "success" for r in recs), [r.get("error") for r in recs]
    for rec in recs:
        model = rec["spec"]["model"]
        lora_expected, total = expected_lora_trainable(model, 2)
        m = rec["metrics"]
        if rec["spec"]["method"] == "full":
            assert m["trainable_params"] == m["total_params"] == total
        else:
            assert m["trainable_params"] == lora_expected
        assert m["tokens_per_s"] > 0 and m["step_time_p50_s"] > 0
        assert rec["timings"]["time_train_s"] > 0
    assert "[8/8]" in res.stdout and "ETA" in res.stdout


def test_nvml_fields_are_null_with_reason_without_gpu(core_run):
    _, out, _ = core_run
    rec = read_jsonl(out / "results.jsonl")[0]
    assert rec["metrics"]["peak_nvml_mib"] is None
    assert "NVML" in rec["missing_reason"]["peak_nvml_mib"]
    assert rec["metrics"]["torch_peak_allocated_mib"] is None and rec["missing_reason"]["torch_peak_allocated_mib"]


def test_checkpoint_bytes_count_weight_files_and_say_what_was_saved(core_run):
    _, out, _ = core_run
    recs = {r["run_id"]: r for r in read_jsonl(out / "results.jsonl")}
    for model in ("tiny-llama", "tiny-bert"):
        full = recs[f"{model}--toy-cls--full--fp32--ga1"]
        lora = next(r for k, r in recs.items() if k.startswith(f"{model}--toy-cls--lora") and k.endswith("ga1"))
        assert lora["metrics"]["checkpoint_bytes"] < 0.05 * full["metrics"]["checkpoint_bytes"]
        for rec in (full, lora):
            ckpt = Path(rec["run_dir"], "checkpoint")
            files = [f for f in ckpt.rglob("*") if f.is_file()]
            weights = sum(f.stat().st_size for f in files if f.suffix == ".safetensors")
            assert rec["metrics"]["checkpoint_bytes"] == weights  # weight files only: no README/config inflation
            assert rec["metrics"]["checkpoint_total_bytes"] == sum(f.stat().st_size for f in files)
            assert set(rec["checkpoint"]["files"]) == {str(f.relative_to(ckpt)) for f in files}


def test_each_cell_ran_in_its_own_process(core_run):
    _, out, _ = core_run
    recs = read_jsonl(out / "results.jsonl")
    pids = {r["child_pid"] for r in recs}
    assert len(pids) == 8 and all(r["child_pid"] != r["runner_pid"] for r in recs)
    assert all(r["env"]["packages"]["torch"] and r["env"]["python"] for r in recs)


def test_rerun_skips_finished_and_reruns_deleted_line(core_run):
    path, out, _ = core_run
    specs = expand(load_suite(path))
    summary = run_specs(specs, RunOptions(out_dir=out), progress=lambda s: None)
    assert summary.ran == 0 and summary.skipped == 8
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(lines[:3] + lines[4:]))
    summary = run_specs(specs, RunOptions(out_dir=out), progress=lambda s: None)
    assert summary.ran == 1 and summary.counts == {"success": 1}
    recs = records.read_records(out).records
    assert sorted(r["run_id"] for r in recs) == sorted(s.run_id for s in specs)


def test_local_model_directory_runs_through_from_pretrained(tmp_path):
    import transformers

    from bench.models.configs import CONFIGS

    cfg = transformers.AutoConfig.for_model(**CONFIGS["tiny-bert"], num_labels=2)
    local = tmp_path / "my-bert"
    transformers.BertForSequenceClassification(cfg).save_pretrained(local)
    path = make_suite(tmp_path, {"model": [str(local)], "method": ["lora"]})
    specs = expand(load_suite(path))
    assert specs[0].run_id.startswith("my-bert--")
    summary = run_specs(specs, RunOptions(out_dir=tmp_path / "out"), progress=lambda s: None)
    rec = records.read_records(tmp_path / "out").records[0]
    assert summary.ran == 1
    assert rec["status"] == "success", rec["error"]
    assert rec["model_info"]["class"] == "BertForSequenceClassification"
    assert rec["model_info"] == {
        "class": "BertForSequenceClassification",
        "source": "dir",
        "random_weights": False,
        "has_tokenizer": False,
        "tokenizer": None,
    }


def test_run_exit_code_tells_errors_from_results(tmp_path, fault_env):
    """failed / timeout (a bug, a hang) exit 1; unsupported and oom are results (0); --strict: only success is 0.
    (A crash exiting 1 through the CLI: tests/test_reliability.py.)"""
    from bench.runner import RunSummary

    oom = make_suite(tmp_path, {"method": ["fault-oom"]}, name="oom")
    res = cli("run", str(oom), "--out", str(tmp_path / "o"), env=fault_env)
    assert res.returncode == 0 and "oom 1" in res.stdout
    for counts, plain, strict in (
        ({"success": 2, "unsupported": 1, "oom": 1}, 0, 1),
        ({"success": 2, "failed": 1}, 1, 1),
        ({"timeout": 1}, 1, 1),
        ({"success": 3}, 0, 0),
    ):
        summary = RunSummary(counts=counts)
        assert (summary.exit_code(), summary.exit_code(strict=True)) == (plain, strict), counts
    assert RunSummary(counts={"canceled": 1}, canceled=True).exit_code() == 130
