"""Every fault ends as a record or a clear error; nothing finished is lost, no process outlives its cell. Faults
come from the test-only fault plugin (tests/plugins/faultplugin), installed on a path through its entry points.
Tests wait on events (a marker file, a process state), never on how long imports take."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.execution import LocalOptions
from bench.runner import RunOptions, run_specs
from bench.suite.load import expand, load_suite
from conftest import cli, make_suite, read_jsonl

pytestmark = pytest.mark.slow


def start_cli(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *args, "--no-forecast"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )


def wait_for(path: Path, timeout: float = 120) -> str:
    """Wait for a marker file to be written (the cap only stops a broken test from hanging)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise TimeoutError(path)


def gone(pid: int, timeout: float = 30) -> bool:
    """True once the process no longer runs (zombies count as gone)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_oom_and_crash_are_recorded_and_the_next_cell_runs(tmp_path, fault_env):
    path = make_suite(tmp_path, {"method": ["fault-oom", "fault-crash", "full"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=fault_env)
    assert res.returncode == 1, res.stderr  # a crash is a bug: the run says so (an oom alone would exit 0)
    oom, crash, ok = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [oom["status"], crash["status"], ok["status"]] == ["oom", "failed", "success"], res.stdout
    assert "out of memory" in oom["error"]["message"]
    assert "peak_nvml_mib" in oom["metrics"]  # the peak seen is kept (null here, with its reason)
    assert crash["error"]["exit_code"] == 7
    assert "about to crash hard" in crash["error"]["stderr_tail"]
    assert (Path(crash["run_dir"]) / "stderr.log").exists()


@pytest.mark.parametrize("launcher", ["spawn", "fork-server"])
def test_kill_9_mid_training_is_failed_with_signal_and_suite_continues(tmp_path, fault_env, launcher):
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 2.0, "label": "slow"}
    path = make_suite(tmp_path, {"method": [slow, "full"]}, steps=20)
    proc = start_cli(["run", str(path), "--out", str(tmp_path / "out"), "--launcher", launcher], fault_env)
    child_pid = int(wait_for(marker))
    os.kill(child_pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err  # a killed cell is failed: exit 1
    recs = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [r["status"] for r in recs] == ["failed", "success"]
    assert recs[0]["error"]["signal"] == 9 and "SIGKILL" in recs[0]["error"]["message"]
    assert "train" in recs[0]["phases"]  # the marks written before the kill still place the failure


def test_hang_past_timeout_is_a_timeout_and_its_tree_is_killed(tmp_path, fault_env):
    marker = tmp_path / "grandchild.pid"
    path = make_suite(
        tmp_path, {"method": [{"name": "fault-sleep", "marker": str(marker), "label": "hang"}]}, timeout_s=5
    )
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=fault_env)
    assert res.returncode == 1, res.stderr  # a hang: exit 1
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "timeout" and "after 5 s" in rec["error"]["message"]
    assert rec["duration_s"] < 30
    if marker.exists():  # the hang began before the timeout fired (on a loaded machine it may not have)
        assert gone(int(marker.read_text()), timeout=5)


def test_a_daemon_that_outlives_its_cell_is_killed_and_noted(tmp_path, fault_env):
    marker = tmp_path / "daemon.pid"
    path = make_suite(tmp_path, {"method": [{"name": "fault-stray", "marker": str(marker), "label": "stray"}]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=fault_env)
    assert res.returncode == 0, res.stderr
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    daemon = int(marker.read_text())
    assert rec["status"] == "success" and gone(daemon, timeout=5)
    assert any("outlived it and were killed" in n and str(daemon) in n for n in rec["notes"]), rec["notes"]


def test_a_cell_that_hangs_after_its_result_keeps_its_verdict(tmp_path, fault_env, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", fault_env["PYTHONPATH"])
    path = make_suite(tmp_path, {"method": ["fault-linger"]}, timeout_s=300)
    opts = RunOptions(out_dir=tmp_path / "out", local=LocalOptions(launcher="spawn", exit_grace_s=1.0))
    run_specs(expand(load_suite(path)), opts, progress=lambda s: None)
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "success" and rec["duration_s"] < 120
    assert any("had not exited" in n for n in rec["notes"])


def test_a_long_cell_says_which_phase_it_is_in(tmp_path, fault_env, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", fault_env["PYTHONPATH"])
    slow = {"name": "fault-slow", "step_sleep_s": 0.6, "label": "slow"}
    path = make_suite(tmp_path, {"method": [slow]}, steps=5)
    lines: list[str] = []
    opts = RunOptions(out_dir=tmp_path / "out", local=LocalOptions(launcher="spawn", heartbeat_s=0.5))
    run_specs(expand(load_suite(path)), opts, progress=lines.append)
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "success"
    beats = [line for line in lines if line.startswith("  ... ")]
    assert any(f"{rec['run_id']}: in its train phase for" in line for line in beats), lines


@pytest.mark.parametrize("launcher", ["spawn", "fork-server"])
def test_runner_killed_with_sigkill_leaves_no_cell_behind(tmp_path, fault_env, launcher):
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 1.0, "label": "slow"}
    path = make_suite(tmp_path, {"method": [slow]}, steps=200)
    proc = start_cli(["run", str(path), "--out", str(tmp_path / "out"), "--launcher", launcher], fault_env)
    cell = int(wait_for(marker))
    proc.kill()
    proc.communicate(timeout=30)
    assert gone(cell), f"cell {cell} outlived its runner"


def test_sigint_cancels_current_cell_and_rerun_finishes_the_rest(tmp_path, fault_env):
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 1.0, "label": "slow"}
    path = make_suite(tmp_path, {"method": ["full", slow, "bitfit"], "model": ["tiny-bert"]}, steps=3)
    out_dir = tmp_path / "out"
    proc = start_cli(["run", str(path), "--out", str(out_dir)], fault_env)
    wait_for(marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    recs = read_jsonl(out_dir / "results.jsonl")
    assert [r["status"] for r in recs] == ["success", "canceled"], out
    assert "canceled" in out
    res = cli("run", str(path), "--out", str(out_dir), env=fault_env)
    assert res.returncode == 0, res.stderr
    assert "resume: 1 of 3" in res.stdout
    recs = read_jsonl(out_dir / "results.jsonl")
    successes = [r["run_id"] for r in recs if r["status"] == "success"]
    assert len(successes) == 3 == len(set(successes))
    slow_dir = Path([r for r in recs if "slow" in r["run_id"]][-1]["run_dir"])
    assert (slow_dir / "attempts" / "1" / "spec.json").exists()  # the canceled attempt's files are kept


def test_two_runners_on_one_out_dir(tmp_path, fault_env):
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 1.0, "label": "slow"}
    path = make_suite(tmp_path, {"method": [slow]}, steps=60)
    first = start_cli(["run", str(path), "--out", str(tmp_path / "out")], fault_env)
    try:
        wait_for(marker)
        res = cli("run", str(path), "--out", str(tmp_path / "out"), env=fault_env)
        assert res.returncode != 0
        assert f"PID {first.pid}" in res.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)


def test_plugins_come_only_from_entry_points(tmp_path):
    path = make_suite(tmp_path, {"method": ["faultplugin.methods:FaultOom"]})
    res = cli("run", str(path), "--dry-run")
    assert res.returncode == 2 and "unknown method" in res.stderr


def test_a_killed_fork_server_is_restarted_once_and_the_suite_goes_on(tmp_path, fault_env):
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 2.0, "label": "slow"}
    path = make_suite(tmp_path, {"method": [slow, "full", "bitfit"]}, model="tiny-bert", steps=6)
    proc = start_cli(["run", str(path), "--out", str(tmp_path / "out"), "--launcher", "fork-server"], fault_env)
    child = psutil.Process(int(wait_for(marker)))
    server = child.parent()
    assert "forkserver" in " ".join(server.cmdline())
    server.kill()
    out, err = proc.communicate(timeout=180)
    recs = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [r["status"] for r in recs] == ["failed", "success", "success"], err
    assert "Traceback" not in err and "{'error'" not in out + err
    assert proc.returncode == 1  # the cell lost with its server is a failure
