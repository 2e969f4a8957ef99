"""Past the peers: the memory estimate, adapter inference cost, repeats with spread, and run-to-run compare."""

import copy
import json

import pytest

from bench import report
from bench.plan.memory import activation_bytes, estimate_spec, parameter_bytes
from bench.suite.spec import RunSpec
from conftest import ROOT, cli, make_suite, read_jsonl, run_cell_inproc
from methods_helper import build

FIX = ROOT / "tests" / "fixtures" / "report_records.jsonl"
TINY = 106_816  # tiny-llama parameters (causal LM, untied head)


def spec(**kw):
    base = dict(suite="x", model="tiny-llama", task="random-lm", method="full", precision="fp32", grad_accum=1)
    return RunSpec(**{**base, "batch_size": 8, "seq_len": 16, **kw})


def test_estimate_counts_weights_gradients_and_adam_by_hand():
    est, why = estimate_spec(spec())
    assert est is not None, why
    mib = 2**20
    assert est.weights_mib == pytest.approx(TINY * 4 / mib)
    assert est.gradients_mib == pytest.approx(TINY * 4 / mib)
    assert est.optimizer_mib == pytest.approx(2 * TINY * 4 / mib)


def test_estimate_of_lora_in_bf16_keeps_a_half_base_and_fp32_adapters():
    est, _ = estimate_spec(spec(method="lora", precision="bf16", method_options={"r": 8}))
    lora = 16_384  # r 8 on every linear of tiny-llama (tests/test_methods.py)
    assert est.weights_mib * 2**20 == pytest.approx(TINY * 2 + lora * 4)
    assert est.gradients_mib * 2**20 == pytest.approx(lora * 4) and est.optimizer_mib * 2**20 == pytest.approx(lora * 8)


def test_estimate_of_a_real_model_matches_the_meta_one():
    a = build("tiny-llama", "lora", {"r": 8})
    assert parameter_bytes(a.model)[1] == pytest.approx(
        estimate_spec(spec(method="lora", method_options={"r": 8}))[0].gradients_mib * 2**20
    )


def test_activation_formula_by_hand_and_checkpointing_saves():
    cfg = type("C", (), dict(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                             hidden_act="silu", num_hidden_layers=2, vocab_size=256, model_type="llama"))()  # fmt: skip
    tokens, kv = 8 * 16, 2 * 16
    block = tokens * (2 * (7 * 64 + 2 * kv + 4 * 128) + 8 * 64)
    logits = tokens * 256 * (2 + 4)
    assert activation_bytes(cfg, 8, 16, 2, False, True) == 2 * block + logits
    assert activation_bytes(cfg, 8, 16, 2, True, True) == tokens * 64 * 2 * 2 + block + logits
    assert activation_bytes(cfg, 8, 16, 2, False, False) == 2 * block


def test_records_carry_the_estimate_beside_the_measurement(tmp_path):
    res = run_cell_inproc(tmp_path, task="random-lm", method="lora", steps=2, save_checkpoint=False)
    assert res["metrics"]["estimate_total_mib"] > 0 and res["metrics"]["estimate_gradients_mib"] > 0


@pytest.mark.slow
def test_a_cell_that_cannot_fit_the_gpu_is_refused_before_it_runs(tmp_path):
    import fake_nvml

    fake = {"devices": [{"name": "SmallGPU", "used_mib": 100, "total_mib": 700}]}
    path = make_suite(tmp_path, {"method": ["full"], "model": ["tiny-llama"]}, task={"name": "random-lm"})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=fake_nvml.env(fake))
    assert res.returncode == 0, res.stderr
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "unsupported" and "GiB free on GPU 0" in rec["error"]["message"]
    assert rec["metrics"]["estimate_total_mib"] > 0 and rec["child_pid"] is None


def test_dry_run_prints_each_cells_estimate(tmp_path, capsys):
    from bench.cli import main

    path = make_suite(tmp_path, {"method": ["full", "lora"]}, task={"name": "random-lm"})
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "weights + grads + optimizer + activations + loss backward = total (training" in out
    assert "tiny-llama--random-lm--lora--fp32--ga1" in out and " MiB" in out and "= 0.00" not in out  # digits shown


def test_inference_phase_gives_three_figures_and_merged_equals_unmerged(tmp_path):
    res = run_cell_inproc(
        tmp_path, task="random-lm", method="lora", method_options={"r": 4}, lr=0.05, steps=4,
        inference={"new_tokens": 4, "batch": 2, "prompt_len": 8, "repeats": 1},
    )  # fmt: skip
    assert res["status"] == "success", res.get("error")
    m = res["metrics"]
    for variant in ("base", "adapter", "merged"):
        assert m[f"inference_tokens_per_s_{variant}"] > 0 and m[f"inference_decode_ms_per_token_{variant}"] > 0
        assert m[f"inference_ttft_ms_{variant}"] > 0
    assert 0 < m["merge_logit_max_abs_diff"] < 1e-4  # a trained adapter, merged: the same model up to rounding
    assert "inference" in res["phases"]


def test_decode_time_is_the_tokens_own_not_a_difference_of_two_noisy_calls():
    """Each new token timed as it arrives within one generate call: a delay before generation starts (the host
    busy elsewhere) moves the time to first token, never the decode time per token (the two-call difference it
    replaced went negative here and was clamped to a fake 0)."""
    import time
    from contextlib import nullcontext

    from bench.cell.inference import generation_speed
    from bench.suite.defaults import InferenceOptions

    class Model:
        calls = 0

        def generate(self, input_ids, max_new_tokens, streamer=None, **_):
            Model.calls += 1
            time.sleep(0.04 if Model.calls % 2 == 0 else 0)  # every other call starts late
            for token in range(-1, max_new_tokens):
                if token >= 0:
                    time.sleep(0.005)
                if streamer is not None:
                    streamer.put(token)

    opts = InferenceOptions(new_tokens=4, batch=1, prompt_len=2, repeats=1)
    figures = generation_speed(Model(), [[1, 2]], opts, "cpu", nullcontext)
    assert 4 < figures["decode_ms_per_token"] < 15, figures
    assert figures["ttft_ms"] > 40 and figures["tokens_per_s"] > 0


def test_deployed_variants_are_the_plain_base_and_a_merged_copy_and_the_merge_changes_logits_a_little():
    """Against a direct peft computation: a non-zero adapter; the merged copy has no peft layers left; its logits
    differ from the unmerged model's by more than 0 and less than 1e-4 in fp32; the base copy has no adapter."""
    from contextlib import nullcontext

    import peft
    import torch

    from bench.cell.inference import deployed_variants, merge_difference
    from bench.models.loading import load_model

    model = load_model("tiny-llama", "causal_lm", None, 0).model
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)  # a trained magnitude
    models, why = deployed_variants(pm)
    assert why == {} and set(models) == {"base", "adapter", "merged"}
    for variant in ("base", "merged"):
        assert not any("lora" in n for n, _ in models[variant].named_modules())
        assert not hasattr(models[variant], "peft_config")
    prompt = torch.randint(4, 200, (2, 8))
    diff = merge_difference(pm, models["merged"], prompt, nullcontext)
    assert 0 < diff < 1e-4
    assert merge_difference(pm, models["base"], prompt, nullcontext) > 1e-3  # the base is really without it


def test_inference_of_a_soft_prompt_says_why_nothing_merges(tmp_path):
    options = {"num_virtual_tokens": 4}
    inference = {"new_tokens": 2, "repeats": 1}
    res = run_cell_inproc(
        tmp_path, task="random-lm", method="prompt", method_options=options, steps=2, inference=inference
    )
    assert res["metrics"]["inference_tokens_per_s_merged"] is None
    assert "soft prompts" in res["missing_reason"]["inference_tokens_per_s_merged"]


def test_repeats_give_one_record_per_seed_and_a_spread_column(tmp_path):
    from bench.suite.load import expand, load_suite

    path = make_suite(tmp_path, {"method": ["full", "lora"]}, repeats=3)
    specs = expand(load_suite(path))
    assert len(specs) == 6 and sorted({s.seed for s in specs}) == [0, 1, 2]
    assert {s.run_id for s in specs} >= {
        "tiny-llama--toy-cls--full--fp32--ga1",
        "tiny-llama--toy-cls--full--fp32--ga1--s2",
    }
    recs = []
    for i, s in enumerate(specs):
        r = json.loads(FIX.read_text().splitlines()[0])
        r["run_id"], r["spec"] = (
            s.run_id,
            {**r["spec"], "method": s.method, "method_label": s.method_label, "seed": s.seed},
        )
        r["metrics"] = {**r["metrics"], "score_after": 0.80 + 0.01 * i}
        recs.append(r)
    md = report.to_markdown(report.records_to_frame(recs))
    assert "3 seeds per cell" in md and "score after mean ± sd" in md
    assert "0.810 ± 0.0100" in md and "0.840 ± 0.0100" in md
    assert "best" in md


def test_methods_within_the_spread_are_marked_indistinguishable():
    from bench.report.repeats import aggregate, versus_best

    rows = [
        {"method_label": m, "precision": "fp32", "grad_accum": 1, "grad_ckpt": False, "status": "success",
         "score_after": s, "trainable_params": 1, "trainable_pct": 1.0, "checkpoint_bytes": 1, "tokens_per_s": 1.0,
         "step_time_p50_s": 1.0, "train_peak_rss_mib": 1.0}
        for m, scores in (("a", [0.80, 0.90]), ("b", [0.84, 0.86]), ("c", [0.50, 0.51])) for s in scores
    ]  # fmt: skip
    df = report.records_to_frame([])
    df = df.reindex(range(len(rows))).assign(**{k: [r[k] for r in rows] for k in rows[0]})
    verdicts = versus_best(aggregate(df), higher_is_better=True)
    assert verdicts == ["best", "≈ best (within spread)", "-0.345"]


def test_compare_is_quiet_on_identical_runs_and_fails_on_a_regression(tmp_path):
    same = cli("compare", str(FIX), str(FIX))
    assert same.returncode == 0 and "nothing moved" in same.stdout
    doctored = [json.loads(line) for line in FIX.read_text().splitlines()]
    worse = copy.deepcopy(doctored)
    worse[1]["metrics"]["tokens_per_s"] *= 0.8  # 20% slower
    worse[2]["metrics"]["trainable_params"] += 1
    worse[0]["metrics"]["score_after"] -= 0.1
    path = tmp_path / "new.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in worse))
    res = cli("compare", str(FIX), str(path))
    assert res.returncode == 1 and "3 regression(s)" in res.stderr
    assert "-20.0%" in res.stdout and "trainable_params" in res.stdout and "score_after" in res.stdout
    faster = copy.deepcopy(doctored)
    faster[1]["metrics"]["tokens_per_s"] *= 1.2
    path.write_text("".join(json.dumps(r) + "\n" for r in faster))
    res = cli("compare", str(FIX), str(path))
    assert res.returncode == 0 and "+20.0%" in res.stdout  # an improvement is shown, not failed


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


@pytest.mark.parametrize("value, code", [("5%", 1), ("0.05", 1), ("90%", 0), ("5", 2), ("abc", 2), ("-1%", 2)])
def test_compare_tolerance_is_a_percentage_or_a_fraction(tmp_path, capsys, value, code):
    from bench.cli import main

    slower = [json.loads(line) for line in FIX.read_text().splitlines()]
    slower[1]["metrics"]["tokens_per_s"] *= 0.2  # 80% slower: `--tolerance 5` (500%) used to pass it
    assert main(["compare", str(FIX), _write(tmp_path / "n.jsonl", slower), f"--tolerance={value}"]) == code
    err = capsys.readouterr().err
    if code == 2:
        assert err.startswith("error: --tolerance") and err.count("\n") == 1, err


def test_compare_missing_cells_and_changed_specs(tmp_path, capsys):
    from bench.cli import main

    recs = [json.loads(line) for line in FIX.read_text().splitlines()]
    fewer = _write(tmp_path / "fewer.jsonl", recs[1:])
    assert main(["compare", str(FIX), fewer]) == 1 and "not in NEW" in capsys.readouterr().out
    assert main(["compare", str(FIX), fewer, "--allow-missing"]) == 0
    base = _write(tmp_path / "base.jsonl", [{**r, "spec_hash": "a" * 16} for r in recs])
    other = [{**r, "spec_hash": "b" * 16 if i == 0 else "a" * 16} for i, r in enumerate(recs)]  # lr 0.003 -> 0.01
    other_path = _write(tmp_path / "other.jsonl", other)
    assert main(["compare", base, other_path]) == 0
    assert "the cell's spec changed" in capsys.readouterr().out
    assert main(["compare", base, other_path, "--deterministic"]) == 2
    assert "another spec" in capsys.readouterr().err
    assert main(["compare", base, other_path, "--deterministic", "--allow-spec-change"]) == 0


def seeded(recs, speeds):
    """Copies of the first cell with seeds 0.. and these tokens/s (run ids `...--sN`)."""
    out = []
    for seed, speed in enumerate(speeds):
        rec = copy.deepcopy(recs[0])
        rec["run_id"] = f"{rec['run_id']}--s{seed}" if seed else rec["run_id"]
        rec["spec"]["seed"] = seed
        rec["metrics"]["tokens_per_s"] = speed
        out.append(rec)
    return out


def test_compare_with_repeats_counts_a_change_only_beyond_the_spread_and_writes_a_pr_comment(tmp_path, capsys):
    from bench.cli import main

    recs = [json.loads(line) for line in FIX.read_text().splitlines()]
    old = _write(tmp_path / "old.jsonl", seeded(recs, [100.0, 140.0, 120.0]))  # mean 120, sd 20
    noisy = _write(tmp_path / "noisy.jsonl", seeded(recs, [95.0, 130.0, 110.0]))  # -8.3%: within the spread
    assert main(["compare", old, noisy]) == 0
    out = capsys.readouterr().out
    assert "(seeds)" in out and "within the spread" in out and "**regression**" not in out
    slow = _write(tmp_path / "slow.jsonl", seeds := seeded(recs, [60.0, 62.0, 61.0]))  # -49%: beyond it
    assert len(seeds) == 3 and main(["compare", old, slow, "--format", "md"]) == 1
    comment = capsys.readouterr().out
    assert comment.startswith("### peft-bench compare: **1 regression(s)**")
    assert "<details><summary>1 figure(s) moved beyond tolerance, 1 of them worse</summary>" in comment
    assert main(["compare", old, old, "--format", "md"]) == 0
    assert capsys.readouterr().out.startswith("### peft-bench compare: no regression")
