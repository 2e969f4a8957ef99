"""The speed knobs users compare: the attention implementation as an axis (and torch.compile, where it lands)."""

from __future__ import annotations

import pytest

from conftest import cli, make_suite, run_cell_inproc


def test_attention_axis_same_loss_for_eager_and_sdpa_and_flash_is_unsupported_with_the_reason(tmp_path):
    common = dict(task="random-lm", task_options={"n_train": 32, "n_eval": 8}, steps=5, batch_size=4)
    eager = run_cell_inproc(tmp_path / "eager", attn="eager", **common)
    sdpa = run_cell_inproc(tmp_path / "sdpa", attn="sdpa", **common)
    assert eager["status"] == sdpa["status"] == "success", (eager.get("error"), sdpa.get("error"))
    assert eager["model_info"]["attn_implementation"] == "eager"
    assert sdpa["model_info"]["attn_implementation"] == "sdpa"
    assert eager["loss_curve"] == pytest.approx(sdpa["loss_curve"], rel=1e-4)
    flash = run_cell_inproc(tmp_path / "flash", attn="flash_attention_2", **common)
    assert flash["status"] == "unsupported" and "flash_attention_2" in flash["error"]["message"]


def test_attention_axis_in_the_run_id_and_checked_at_suite_load(tmp_path):
    from bench.suite.load import load_suite
    from bench.suite.matrix import expand

    specs = expand(load_suite(make_suite(tmp_path, {"method": ["full"], "attn": ["eager", "sdpa"]}, name="a")))
    assert [s.run_id.split("--")[-1] for s in specs] == ["attn-eager", "attn-sdpa"]
    default = expand(load_suite(make_suite(tmp_path, {"method": ["full"]}, name="b")))[0]
    assert "attn" not in default.run_id and default.attn == ""
    bad = make_suite(tmp_path, {"method": ["full"], "attn": ["sdp"]}, name="c")
    res = cli("run", str(bad), "--dry-run")
    assert res.returncode == 2 and "unknown attention 'sdp' (did you mean 'sdpa'?)" in res.stderr, res.stderr


@pytest.mark.slow
def test_a_compiled_lora_cell_follows_the_uncompiled_loss_curve_and_records_the_compile(tmp_path):
    common = dict(
        task="random-lm",
        task_options={"n_train": 32, "n_eval": 8},
        method="lora",
        method_options={"r": 4},
        steps=6,
        warmup_steps=2,
        batch_size=4,
    )
    plain = run_cell_inproc(tmp_path / "plain", **common)
    compiled = run_cell_inproc(tmp_path / "compiled", compile={"backend": "aot_eager"}, **common)
    assert plain["status"] == compiled["status"] == "success", (plain.get("error"), compiled.get("error"))
    assert compiled["loss_curve"] == pytest.approx(plain["loss_curve"], rel=1e-3)
    m = compiled["metrics"]
    assert m["compiled_graphs"] >= 1 and m["dynamo_frames"] >= 1 and m["graph_breaks"] >= 0
    assert m["compile_warmup_s"] > 0 and m["compile_overhead_s"] is not None
    assert (
        m["hardware_flops_per_token"] is None and "compiled" in compiled["missing_reason"]["hardware_flops_per_token"]
    )
    assert "compile_overhead_s" not in plain["metrics"]


def test_compile_axis_in_the_run_id_and_checked(tmp_path):
    from bench.suite.load import load_suite
    from bench.suite.matrix import expand

    matrix = {"method": ["lora"], "compile": [False, True, {"backend": "aot_eager"}]}
    specs = expand(load_suite(make_suite(tmp_path, matrix, name="a")))
    assert [s.run_id.split("--")[-1] for s in specs] == ["ga1", "compile", "compile-aot_eager"]
    bad = make_suite(tmp_path, {"method": ["lora"], "compile": [{"backnd": "x"}]}, name="b")
    res = cli("run", str(bad), "--dry-run")
    assert res.returncode == 2 and "backnd: unknown option (did you mean 'backend'?)" in res.stderr, res.stderr
    no_warmup = make_suite(tmp_path, {"method": ["lora"], "compile": [True]}, name="c", warmup_steps=0)
    res = cli("run", str(no_warmup), "--dry-run")
    assert res.returncode == 2 and "compile needs warmup_steps >= 1" in res.stderr, res.stderr
