"""Launchers: the fork server keeps per-cell isolation and gives the same records as spawn; spawn cells
import only the heavy libraries they use."""

import dataclasses

import pytest

from conftest import cli, make_suite, read_jsonl

pytestmark = pytest.mark.slow

SAME = [
    "trainable_params",
    "total_params",
    "checkpoint_bytes",
    "score_before",
    "score_after",
    "final_loss",
    "timed_tokens",
    "micro_batch_size",
]


def test_spawn_and_fork_server_give_the_same_records_and_spawn_imports_only_what_it_uses(tmp_path):
    path = make_suite(tmp_path, {"method": [{"name": "lora", "r": 4}, "full"]}, steps=5)
    recs = {}
    for launcher in ("spawn", "fork-server"):
        res = cli("run", str(path), "--out", str(tmp_path / launcher), "--launcher", launcher)
        assert res.returncode == 0, res.stderr
        recs[launcher] = read_jsonl(tmp_path / launcher / "results.jsonl")
    for a, b in zip(recs["spawn"], recs["fork-server"]):
        assert (a["launcher"], b["launcher"]) == ("spawn", "fork-server")
        assert a["status"] == b["status"] == "success"
        assert {k: a["metrics"][k] for k in SAME} == {k: b["metrics"][k] for k in SAME}
        assert a["loss_curve"] == b["loss_curve"] and a["dtypes"] == b["dtypes"]
        assert b["timings"]["time_import_s"] < a["timings"]["time_import_s"]
    lora, full = recs["spawn"]
    assert full["heavy_modules_loaded"] == []
    assert "peft" in lora["heavy_modules_loaded"] and "datasets" not in lora["heavy_modules_loaded"]
    assert full["timings"]["time_spawn_s"] > 0


def test_fork_server_cells_are_isolated(tmp_path, fault_env):
    path = make_suite(tmp_path, {"method": ["fault-patch", "fault-check", "full"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--launcher", "fork-server", env=fault_env)
    assert res.returncode == 0, res.stderr
    recs = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [r["status"] for r in recs] == ["success"] * 3, [r.get("error") for r in recs]
    assert recs[0]["metrics"]["score_after"] == -1.0  # the patch was live inside its own cell only
    assert recs[1]["metrics"]["score_after"] >= 0
    pids = {r["child_pid"] for r in recs}
    assert len(pids) == 3 and recs[0]["runner_pid"] not in pids
    # the server preloads what its cells import, nothing more: no peft (nor the bitsandbytes it pulls in) here
    assert [r["heavy_modules_loaded"] for r in recs] == [[]] * 3


def test_spawn_classifies_crashes_as_the_fork_server_does(tmp_path, fault_env):
    """tests/test_reliability.py checks the same faults with the fork server (the CPU default)."""
    path = make_suite(tmp_path, {"method": ["fault-crash", "fault-oom"]})
    cli("run", str(path), "--out", str(tmp_path / "out"), "--launcher", "spawn", env=fault_env)
    crash, oom = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert crash["status"] == "failed" and crash["exit_code"] == 7 and "about to crash" in crash["error"]["stderr_tail"]
    assert oom["status"] == "oom"


def test_a_fork_server_preloads_the_union_of_what_its_cells_import(tmp_path):
    from bench.execution.launchers import preload_for
    from bench.suite.load import expand, load_suite

    def preload(matrix, **defaults):
        return preload_for(expand(load_suite(make_suite(tmp_path, matrix, **defaults))))

    assert preload({"method": ["full", "bitfit"]}) == []
    assert preload({"method": ["full", {"name": "lora", "r": 4}]}) == ["peft"]
    assert preload({"method": ["qlora"]}, precision="nf4") == ["bitsandbytes", "peft"]
    (lora,) = expand(load_suite(make_suite(tmp_path, {"method": ["lora"]})))
    assert preload_for([dataclasses.replace(lora, method="gone")]) == []  # a plugin gone since: its cell says so
