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


def test_readers_skip_and_name_records_of_the_wrong_shape(tmp_path):
    from conftest import ROOT

    good = (ROOT / "tests" / "fixtures" / "report_records.jsonl").read_text().splitlines()[0]
    bad = [
        {"run_id": "x", "status": "success", "metrics": None},
        {"run_id": "y", "status": "success", "metrics": {"tokens_per_s": "fast"}},
        {"run_id": "z"},
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join([good, *map(json.dumps, bad)]) + "\n")
    for command in (["report", str(path)], ["show", str(tmp_path)], ["compare", str(path), str(path)]):
        res = cli(*command)
        assert res.returncode == 0, res.stderr
        assert res.stderr.count("not a record") >= 3 and "Traceback" not in res.stderr, res.stderr
    res = cli("report", str(path), "--group-by", "bogus")
    assert res.returncode == 2 and "error: --group-by" in res.stderr and "valid:" in res.stderr
    res = cli("report", str(path), "--plot", "x.xyz")
    assert res.returncode == 2 and "--plot" in res.stderr


def test_unwritable_outputs_are_one_line_and_exit_2(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    s = suite(tmp_path)
    for out in (a_file, a_file / "under", "/proc/peft-bench-out"):  # /proc: read-only even for root
        res = cli("run", str(s), "--out", str(out))
        assert res.returncode == 2 and res.stderr.startswith("error: cannot write"), (out, res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    res = cli("report", "tests/fixtures/report_records.jsonl", "-o", str(a_file / "r.md"))
    assert res.returncode == 2 and res.stderr.startswith("error: cannot write") and "Traceback" not in res.stderr


def test_a_closed_stdout_never_stops_the_suite(tmp_path):
    import subprocess
    import sys

    two = tmp_path / "two.yaml"
    two.write_text(SUITE.format(lr="1e-3", seq_len=16, task="toy-cls", steps=3).replace("[full]", "[full, lora]"))
    out = tmp_path / "out"
    cmd = f"{sys.executable} -m bench.cli run {two} --out {out} --no-forecast | head -1"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert [r["status"] for r in read_jsonl(out / "results.jsonl")] == ["success", "success"]


def test_nohup_keeps_sighup_ignored(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    s = suite(tmp_path, steps=40)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        ["nohup", sys.executable, "-m", "bench.cli", "run", str(s), "--out", str(out), "--no-forecast"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not list(out.glob("runs/*/phases.jsonl")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGHUP)
    proc.wait(timeout=300)
    assert proc.returncode == 0, proc.stderr.read()
    assert [r["status"] for r in read_jsonl(out / "results.jsonl")] == ["success"]


def test_a_broken_plugin_is_listed_as_broken_and_fails_only_the_suites_that_use_it(tmp_path):
    import os

    site = tmp_path / "site"
    dist = site / "brokenplugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[peft_bench.methods]\nbroken = no_such_module_here:Method\n")
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    res = cli("list", "methods", env=env)
    assert res.returncode == 0 and "BROKEN" in res.stdout and "brokenplugin" in res.stdout, res.stderr
    assert "lora" in res.stdout
    assert cli("run", str(suite(tmp_path)), "--dry-run", env=env).returncode == 0
    uses = tmp_path / "uses.yaml"
    uses.write_text(suite(tmp_path).read_text().replace("[full]", "[broken]"))
    res = cli("run", str(uses), "--dry-run", env=env)
    assert res.returncode == 2 and "broken" in res.stderr and "Traceback" not in res.stderr


def test_an_unreachable_hub_is_one_short_attempt_and_one_clear_line(tmp_path):
    import time

    s = tmp_path / "hub.yaml"
    s.write_text(
        SUITE.format(lr="1e-3", seq_len=16, task="toy-cls", steps=3).replace(
            "model: tiny-llama", "model: some-org/not-cached-anywhere"
        )
    )
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"}  # a closed port: refused at once
    t0 = time.time()
    res = cli("run", str(s), "--out", str(tmp_path / "out"), env=env)
    assert time.time() - t0 < 30, "offline hub retries"
    assert res.returncode == 1, res.stdout + res.stderr
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "failed" and "the hub is unreachable" in rec["error"]["message"]
    assert "127.0.0.1:9" in rec["error"]["message"] and "local directory" in rec["error"]["message"]
