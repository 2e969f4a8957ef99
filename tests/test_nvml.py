"""NVML sampling with a fake backend (no GPU here), the missing-reason path, and the busy-GPU refusal."""

import json
import subprocess
import sys
import time

import pytest

from bench import nvml
from bench.runner import BusyGpu, RunOptions, run_specs
from bench.suite import expand, load_suite
from conftest import cli, make_suite


def test_real_nvml_without_gpu_gives_reason_not_zero(monkeypatch):
    monkeypatch.delenv(nvml.FAKE_ENV, raising=False)
    backend, reason = nvml.open_backend()
    if backend is None:
        assert "NVML" in reason or "GPU" in reason
        peaks = nvml.Sampler(None, 0, reason).stop()
        assert peaks.peak_nvml_mib is None and peaks.missing_reason["peak_nvml_mib"] == reason


def test_sampler_sums_the_child_process_tree():
    fake = nvml.FakeNvml({"devices": [{"used_mib": 1000, "processes": [{"pid": 1, "used_mib": 300}]}], "tree_mib": 250})
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(3)']); time.sleep(3)",
        ]
    )
    try:
        sampler = nvml.Sampler(fake, 0, None, interval_s=0.01)
        sampler.start(child.pid)
        time.sleep(0.8)
        tree = sampler._tree()
        peaks = sampler.stop()
    finally:
        child.kill()
        child.wait()
    assert len(tree) == 2  # the child and its grandchild
    assert peaks.samples > 10
    assert peaks.peak_nvml_process_mib == 2 * 250  # both processes of the tree, not the foreign PID 1
    assert peaks.peak_nvml_mib == 1250
    assert peaks.baseline_nvml_mib == 1000


def test_busy_gpu_refuses_with_process_list(tmp_path, monkeypatch):
    fake = {"devices": [{"used_mib": 9000, "processes": [{"pid": 1, "used_mib": 8000}]}]}
    monkeypatch.setenv(nvml.FAKE_ENV, json.dumps(fake))
    path = make_suite(tmp_path, {"method": ["full"]})
    with pytest.raises(BusyGpu) as err:
        run_specs(expand(load_suite(path)), RunOptions(out_dir=tmp_path / "out"), progress=lambda s: None)
    assert "PID 1" in str(err.value) and "8000 MiB" in str(err.value) and "--allow-busy-gpu" in str(err.value)
    res = cli(
        "run",
        str(path),
        "--out",
        str(tmp_path / "out"),
        "--busy-threshold-mib",
        "100",
        env={nvml.FAKE_ENV: json.dumps(fake)},
    )
    assert res.returncode == 1 and "busy" in res.stderr


def test_busy_gpu_below_threshold_passes():
    fake = nvml.FakeNvml({"devices": [{"used_mib": 400, "processes": [{"pid": 1, "used_mib": 400}]}]})
    assert nvml.busy_processes(fake, 0, 500, set()) == []
    assert nvml.busy_processes(fake, 0, 100, set()) != []


@pytest.mark.slow
def test_cell_record_carries_fake_nvml_peaks(tmp_path):
    fake = {"devices": [{"name": "FakeH100", "used_mib": 600, "processes": []}], "tree_mib": 123}
    path = make_suite(tmp_path, {"method": ["full"]})
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env={nvml.FAKE_ENV: json.dumps(fake)})
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert rec["status"] == "success"
    assert rec["metrics"]["peak_nvml_process_mib"] == 123
    assert rec["metrics"]["peak_nvml_mib"] == 723 and rec["metrics"]["baseline_nvml_mib"] == 600
    assert "peak_nvml_mib" not in rec["missing_reason"]
    assert rec["env"]["nvml_gpu_name"] == "FakeH100" and rec["gpu_index"] == 0
