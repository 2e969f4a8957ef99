"""NVML sampling with the test fake (no GPU here): process-tree sums, per-phase attribution, errors mid-run, the
missing-reason path, and the busy-GPU refusal."""

import json
import subprocess
import sys
import time

import pytest

import fake_nvml
from bench.execution.gpus import BusyGpu
from bench.runner import RunOptions, run_specs
from bench.suite.load import expand, load_suite
from bench.trackers import nvml
from conftest import cli, make_suite, unexplained_nulls


def use_fake(monkeypatch, config):
    for k, v in fake_nvml.env(config).items():
        if k != "PYTHONPATH":
            monkeypatch.setenv(k, v)
    backend, reason = nvml.open_backend()
    assert backend is not None, reason
    return backend


def test_real_nvml_without_gpu_gives_reason_not_zero(monkeypatch):
    monkeypatch.delenv(nvml.BACKEND_ENV, raising=False)
    backend, reason = nvml.open_backend()
    if backend is None:
        assert "NVML" in reason or "GPU" in reason
        sampler = nvml.Sampler(None, 0)
        metrics, missing, _ = nvml.attribute(sampler, {}, 10, reason)
        assert metrics["peak_nvml_mib"] is None and missing["peak_nvml_mib"] == reason
        assert metrics["train_peak_nvml_process_mib"] is None and missing["energy_per_token_j"] == reason


def test_sampler_sums_the_child_process_tree(monkeypatch):
    backend = use_fake(monkeypatch, {"devices": [{"used_mib": 1000, "processes": [{"pid": 1, "used_mib": 300}]}]})
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(3)']); time.sleep(3)",
        ]
    )
    try:
        time.sleep(0.3)
        backend.processes = lambda index: {1: 300.0, **{p: 250.0 for p in sampler._tree()}}
        sampler = nvml.Sampler(backend, 0, interval_s=0.01)
        sampler.take_baseline()
        sampler.start(child.pid)
        time.sleep(0.5)
        tree = sampler._tree()
        timeline = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert len(tree) == 2  # the child and its grandchild
    assert len(timeline.t) > 10
    assert max(timeline.tree) == 2 * 250  # both processes of the tree, not the foreign PID 1
    assert sampler.baseline_mib == 1000


def test_phases_get_their_own_peaks_and_energy():
    tl = nvml.Timeline()
    for i in range(100):  # 1 s at 10 ms; memory rises in the train window; 100 W
        t = 1000 + i / 100
        tl.add(
            t,
            500 + (4000 if 1000.3 <= t <= 1000.7 else 0),
            400 if 1000.3 <= t <= 1000.7 else 100,
            1e6 + (t - 1000) * 1e5,
        )
    sampler = nvml.Sampler(object(), 0)
    sampler.timeline, sampler.baseline_mib = tl, 500
    phases = {
        "load": {"start_unix": 1000.0, "end_unix": 1000.25},
        "train": {"start_unix": 1000.3, "end_unix": 1000.7},
        "train_timed": {"start_unix": 1000.4, "end_unix": 1000.6},
    }
    metrics, missing, per_phase = nvml.attribute(sampler, phases, timed_tokens=1000, reason=None)
    assert per_phase["load"]["peak_nvml_process_mib"] == 100 and per_phase["train"]["peak_nvml_process_mib"] == 400
    assert metrics["train_peak_nvml_process_mib"] == 400 and metrics["train_peak_nvml_mib"] == 4500
    assert metrics["train_energy_j"] == pytest.approx(20.0)  # 0.2 s x 100 W
    assert metrics["energy_j"] == pytest.approx(99.0)  # first to last sample
    assert metrics["energy_per_token_j"] == pytest.approx(0.02)
    assert not missing


def test_nvml_error_mid_cell_costs_samples_not_the_record(monkeypatch):
    backend = use_fake(monkeypatch, {"devices": [{"used_mib": 700}], "fail_every": 3})
    sampler = nvml.Sampler(backend, 0, interval_s=0.005)
    sampler.take_baseline()
    sampler.start(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"]).pid)
    time.sleep(0.4)
    timeline = sampler.stop()
    assert timeline.errors > 0 and len(timeline.t) > 0 and "Unknown Error" in timeline.last_error
    metrics, _, _ = nvml.attribute(sampler, {}, None, None)
    assert metrics["nvml_errors"] == timeline.errors and metrics["peak_nvml_mib"] == 700


@pytest.mark.slow
def test_nvml_lost_mid_run_still_gives_a_record_and_the_suite_goes_on(tmp_path):
    config = tmp_path / "nvml.json"
    config.write_text(json.dumps({"devices": [{"used_mib": 100}], "fail_from_call": 40}))
    path = make_suite(tmp_path, {"method": ["full", "bitfit"], "model": ["tiny-bert"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-fit-check", env=fake_nvml.env(path=str(config)))
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs] == ["success", "success"]
    assert recs[-1]["metrics"]["nvml_errors"] > 0 and any("NVML samples failed" in n for n in recs[-1]["notes"])


def test_busy_gpu_refuses_with_process_list(tmp_path, monkeypatch):
    fake = {"devices": [{"used_mib": 9000, "processes": [{"pid": 1, "used_mib": 8000}]}]}
    use_fake(monkeypatch, fake)
    path = make_suite(tmp_path, {"method": ["full"]})
    with pytest.raises(BusyGpu) as err:
        run_specs(expand(load_suite(path)), RunOptions(out_dir=tmp_path / "out"), progress=lambda s: None)
    assert "PID 1" in str(err.value) and "8000 MiB" in str(err.value) and "--allow-busy-gpu" in str(err.value)
    env = fake_nvml.env(fake)
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--busy-threshold-mib", "100", env=env)
    assert res.returncode == 1 and "busy" in res.stderr


def test_memory_held_by_an_invisible_process_counts_as_busy(tmp_path, monkeypatch):
    """A process in another PID namespace holds memory but NVML lists no PID for it (615 MiB on the H200 we
    tried): device memory over the threshold still refuses, naming what was used."""
    use_fake(monkeypatch, {"devices": [{"used_mib": 615, "processes": []}]})
    path = make_suite(tmp_path, {"method": ["full"]})
    with pytest.raises(BusyGpu, match="(?s)615 MiB used before any cell.*another container"):
        run_specs(expand(load_suite(path)), RunOptions(out_dir=tmp_path / "out"), progress=lambda s: None)


def test_busy_gpu_below_threshold_passes(monkeypatch):
    backend = use_fake(monkeypatch, {"devices": [{"used_mib": 400, "processes": [{"pid": 1, "used_mib": 400}]}]})
    assert nvml.busy_processes(backend, 0, 500, set()) == []
    assert nvml.busy_processes(backend, 0, 100, set()) != []


@pytest.mark.slow
def test_cell_record_carries_fake_nvml_peaks(tmp_path):
    fake = {"devices": [{"name": "FakeH100", "used_mib": 300, "processes": []}], "tree_mib": 123}
    path = make_suite(tmp_path, {"method": ["full"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-fit-check", env=fake_nvml.env(fake))
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert rec["status"] == "success"
    m = rec["metrics"]
    assert m["peak_nvml_process_mib"] == 123 and m["train_peak_nvml_process_mib"] == 123
    assert m["peak_nvml_mib"] == 423 and m["baseline_nvml_mib"] == 300 and m["suite_baseline_nvml_mib"] == 300
    assert "peak_nvml_mib" not in rec["missing_reason"]
    assert rec["phases"]["train"]["peak_nvml_process_mib"] == 123
    assert rec["env"]["nvml_gpu_name"] == "FakeH100" and rec["gpu_index"] == 0
    assert rec["env"]["cuda_visible_devices"] == "GPU-fake-0" and rec["env"]["cuda_device_order"] == "PCI_BUS_ID"
    assert unexplained_nulls(rec) == []


@pytest.mark.parametrize(
    "report, why",
    [("none", "usedGpuMemory is None"), ("hidden", "no PID of the cell's process tree is in NVML's process list")],
)
def test_unknown_process_memory_is_null_with_the_reason_and_a_labelled_fallback(tmp_path, report, why):
    fake = {"devices": [{"used_mib": 300, "processes": []}], "tree_mib": 123, "tree_report": report}
    path = make_suite(tmp_path, {"method": ["full"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-fit-check", env=fake_nvml.env(fake))
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    m, missing = rec["metrics"], rec["missing_reason"]
    assert m["train_peak_nvml_process_mib"] is None and why in missing["train_peak_nvml_process_mib"]
    assert m["peak_nvml_process_mib"] is None and why in missing["peak_nvml_process_mib"]
    assert m["train_peak_nvml_device_minus_baseline_mib"] == 123  # 423 on the device - 300 held before the cell
    from bench import report as rep

    text = rep.to_markdown(rep.load(tmp_path / "out" / "results.jsonl"))
    assert "123 (device - baseline)" in text


def test_a_cpu_cell_on_a_gpu_host_gets_no_gpu_no_sampling_and_no_fit_check(tmp_path):
    """A full GPU (9 of 9.1 GiB used by a process NVML cannot name) would refuse any GPU cell at suite start and
    fail every fit check: a `device: cpu` cell runs anyway, unsampled."""
    fake = {"devices": [{"used_mib": 9000, "total_mib": 9100, "processes": []}], "tree_mib": 50}
    path = make_suite(tmp_path, {"method": ["full"]}, device="cpu")
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=fake_nvml.env(fake))
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert rec["status"] == "success" and rec["gpu_index"] is None
    assert rec["metrics"]["train_peak_nvml_process_mib"] is None
    assert "device: cpu" in rec["missing_reason"]["train_peak_nvml_process_mib"]
    assert rec["env"]["cuda_visible_devices"] == ""
    assert rec["metrics"]["train_peak_rss_mib"] > 0  # the CPU headline


def test_a_fit_check_refusal_is_checked_again_and_no_fit_check_runs_it(tmp_path):
    fake = {"devices": [{"used_mib": 100, "total_mib": 200, "processes": []}]}
    path = make_suite(tmp_path, {"method": ["full"]})
    out = tmp_path / "out"
    res = cli("run", str(path), "--out", str(out), "--busy-threshold-mib", "1000", env=fake_nvml.env(fake))
    assert res.returncode == 0, res.stderr
    first = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert first["status"] == "unsupported" and first["error"]["type"] == "FitCheck"
    res = cli(
        "run", str(path), "--out", str(out), "--busy-threshold-mib", "1000", "--no-fit-check", env=fake_nvml.env(fake)
    )
    assert res.returncode == 0, res.stderr
    last = json.loads((out / "results.jsonl").read_text().splitlines()[-1])
    assert last["status"] == "success" and len((out / "results.jsonl").read_text().splitlines()) == 2
