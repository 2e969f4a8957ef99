"""Hostile but realistic input, through the real CLI: every case a clear error or an honest record."""

from __future__ import annotations

import json

from conftest import cli, read_jsonl

SUITE = """name: h
defaults: {{steps: {steps}, warmup_steps: 1, batch_size: 4, seq_len: {seq_len}, lr: {lr}, timeout_s: 120,
  precision: fp32, grad_accum: 1, model: tiny-llama, task: {{name: {task}, n_train: 16, n_eval: 8}}}}
matrix:
  method: [full]
"""


def suite(tmp_path, lr="1e-3", seq_len=16, task="toy-cls", steps=4):
    path = tmp_path / "h.yaml"
    path.write_text(SUITE.format(lr=lr, seq_len=seq_len, task=task, steps=steps))
    return path


def test_lr_written_as_people_write_it_is_a_number(tmp_path):
    res = cli("run", str(suite(tmp_path, lr="3e-5")), "--dry-run")
    assert res.returncode == 0, res.stderr
    res = cli("run", str(suite(tmp_path, lr="fast")), "--dry-run")
    assert res.returncode == 2 and "lr" in res.stderr and "Traceback" not in res.stderr


def test_divergence_is_a_failed_cell_naming_the_step_and_records_are_strict_json(tmp_path):
    out = tmp_path / "out"
    res = cli("run", str(suite(tmp_path, lr="1e+9", steps=6)), "--out", str(out))
    assert res.returncode == 1, res.stdout + res.stderr
    text = (out / "results.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    (rec,) = [
        json.loads(line, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c))) for line in text.splitlines()
    ]
    assert rec["status"] == "failed" and rec["error"]["message"].startswith("Diverged: loss nan at step")
    assert rec["loss_curve"][0] is not None and rec["loss_curve"][-1] is None  # the steps before it are kept
    assert rec["metrics"].get("score_after") is None


def test_a_causal_lm_with_nothing_to_predict_is_refused(tmp_path):
    res = cli("run", str(suite(tmp_path, seq_len=1, task="random-lm")), "--dry-run")
    assert res.returncode == 2 and "no token to predict" in res.stderr


def test_malformed_overrides_and_binary_suites_are_one_line(tmp_path):
    res = cli("run", str(suite(tmp_path)), "--dry-run", "method=[lora,full")
    assert res.returncode == 2 and res.stderr.startswith("error: override") and "Traceback" not in res.stderr
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    res = cli("run", str(binary), "--dry-run")
    assert res.returncode == 2 and "not a text file" in res.stderr and res.stderr.count("\n") == 1


def test_compare_calls_finite_to_non_finite_a_regression(tmp_path, capsys):
    from bench.cli import main
    from conftest import ROOT

    fix = ROOT / "tests" / "fixtures" / "report_records.jsonl"
    recs = [json.loads(line) for line in fix.read_text().splitlines()]
    recs[0]["metrics"]["score_after"] = None
    recs[0].setdefault("missing_reason", {})["score_after"] = "not finite (nan)"
    path = tmp_path / "n.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["compare", str(fix), str(path)]) == 1
    assert "not finite" in capsys.readouterr().out
    assert read_jsonl(path)
