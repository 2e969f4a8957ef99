"""The cluster path against a real one-node Slurm (scripts/slurm-local.sh installs slurm-wlm + munge when missing
and starts it): records with job ids, resume without resubmission, scancel, Slurm's time limit, a runner killed
mid-suite, and a bad partition. Skips, saying why, only where Slurm cannot be installed or started."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import ROOT, cli, read_jsonl

pytestmark = pytest.mark.slow
SCRIPT = ROOT / "scripts" / "slurm-local.sh"


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PEFT_BENCH_SLURM_DIR": str(state)}
    res = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, env=env, timeout=600)
    if res.returncode != 0:
        pytest.skip(f"no local Slurm here (scripts/slurm-local.sh start exited {res.returncode}): {res.stderr[-500:]}")
    yield {"SLURM_CONF": str(state / "slurm.conf")}
    subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, env=env, timeout=120)


def suite(tmp_path, methods, name="sl", **executor):
    data = {
        "name": name,
        "defaults": {
            "steps": 3,
            "warmup_steps": 1,
            "batch_size": 4,
            "seq_len": 16,
            "timeout_s": 600,
            "device": "cpu",
            "task": {"name": "toy-cls", "n_train": 16, "n_eval": 8},
            "precision": "fp32",
            "grad_accum": 1,
            "model": "tiny-bert",
        },
        "matrix": {"method": methods},
        "executor": {"kind": "slurm", "partition": "debug", **executor},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def wait_for(path, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.2)
    raise TimeoutError(path)


def test_four_cells_run_as_jobs_and_a_job_slurm_kills_at_its_limit_is_a_timeout(tmp_path, slurm, fault_env):
    four = ["full", "bitfit", {"name": "lora", "r": 2}, {"name": "ia3"}]
    hang = {"name": "fault-sleep", "label": "hang"}
    # the hang goes first so that its minute (Slurm's smallest limit, long before timeout_s 600) overlaps the others
    path = suite(tmp_path, [hang, *four], time_min=1)
    env = {**fault_env, **slurm}
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=env, timeout=400)
    assert res.returncode == 1, res.stderr + res.stdout  # the timeout: exit 1
    recs = {r["run_id"]: r for r in read_jsonl(tmp_path / "out" / "results.jsonl")}
    statuses = sorted(r["status"] for r in recs.values())
    assert statuses == ["success"] * 4 + ["timeout"], [(k, r["status"], r.get("error")) for k, r in recs.items()]
    job_ids = {r["env"]["slurm_job_id"] for r in recs.values()}
    assert len(job_ids) == 5 and all(job_ids)
    hung = next(r for r in recs.values() if r["status"] == "timeout")
    assert "time limit" in hung["error"]["message"]
    assert "sacct" not in res.stderr  # no accounting database: quiet
    ok = [k for k, r in recs.items() if r["status"] == "success"]
    again = cli("run", str(path), "--out", str(tmp_path / "out"), *[a for k in ok for a in ("--only", k)], env=env)
    assert again.returncode == 0 and "resume: 4 of 4" in again.stdout
    assert len(read_jsonl(tmp_path / "out" / "results.jsonl")) == 5  # the second run added nothing


def test_a_two_rank_cell_is_one_job_and_a_cell_over_two_real_nodes_measures_both(tmp_path, slurm):
    """Partition nodes2: two slurmds on this host. A two-rank cell is one job with a CPU per rank; a cell over two
    nodes is one job with a task on each, trains what the one-node cell trains, and its record has every node's
    figures (fake NVML, one GPU per node: node 1's task samples its own and sends them to the first node)."""
    import fake_nvml

    if "nodes2" not in subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True,
                                      env={**os.environ, **slurm}).stdout:  # fmt: skip
        pytest.skip("the test cluster has no second node (this host is named localhost)")
    ddp = {"name": "lora", "r": 2, "distributed": {"nproc": 2, "strategy": "ddp"}}
    nodes = {"name": "lora", "r": 2, "distributed": {"nproc": 1, "strategy": "ddp", "nnodes": 2}}
    path = suite(tmp_path, [ddp, nodes], name="ranks", partition="nodes2")
    data = yaml.safe_load(path.read_text())
    data["defaults"]["device"] = "auto"  # auto: the fake GPUs are sampled, the ranks train on the CPU
    path.write_text(yaml.safe_dump(data))
    fake = {"devices": [{"name": "FakeGPU0"}], "tree_mib": 300, "node_tree_mib": {"1": 700}, "watts": 100}
    env = {**slurm, **fake_nvml.env(fake)}
    res = cli("run", str(path), "--out", str(tmp_path / "out"), env=env, timeout=400)
    assert res.returncode == 0, res.stderr + res.stdout
    recs = {r["run_id"].rsplit("--", 1)[-1]: r for r in read_jsonl(tmp_path / "out" / "results.jsonl")}
    one, two = recs["ddp2"], recs["ddp1x2"]
    assert one["status"] == "success" and two["status"] == "success", (one.get("error"), two.get("error"))
    assert one["env"]["slurm_job_id"] and one["metrics"]["world_size"] == 2 and len(one["ranks"]) == 2
    job = subprocess.run(
        ["scontrol", "show", "job", one["env"]["slurm_job_id"]],
        capture_output=True,
        text=True,
        env={**os.environ, **slurm},
    )
    assert job.returncode != 0 or "NumCPUs=2" in job.stdout or "MinCPUsNode=2" in job.stdout, job.stdout
    # over two nodes: the same training, a rank on each node, each rank's row with its own node's GPU
    assert two["env"]["distributed"]["nnodes"] == 2 and two["metrics"]["world_size"] == 2
    assert two["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-3)
    rows = sorted(two["ranks"], key=lambda r: r["node"])
    assert [r["node"] for r in rows] == [0, 1] and len({r["host"] for r in rows}) == 2, rows
    assert [r["train_peak_nvml_process_mib"] for r in rows] == [300, 700]
    assert [n["host"] for n in two["nodes"]] == [r["host"] for r in rows]
    m = two["metrics"]
    assert m["train_peak_nvml_process_mib"] == 700  # the largest node's GPU
    assert m["train_energy_j"] == pytest.approx(sum(n["train_energy_j"] for n in two["nodes"]))
    assert m["train_peak_rss_mib"] == max(n["train_peak_rss_mib"] for n in two["nodes"]) > 0
    assert one["nodes"] is None


def slow_job(tmp_path, name, env):
    """A runner whose one Slurm job trains slowly; returns (runner, suite, out, job id) once training began."""
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 0.5, "label": "slow"}
    path, out = suite(tmp_path, [slow], name=name), tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(out), "--no-forecast"]
    runner = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    wait_for(marker)
    job_id = json.loads((out / "slurm" / "jobs.json").read_text())["tiny-bert--toy-cls--slow--fp32--ga1"]["job_id"]
    return runner, path, out, job_id


def test_a_scancelled_job_is_canceled_and_a_rerun_finishes_it(tmp_path, slurm, fault_env):
    env = {**os.environ, **fault_env, **slurm}
    runner, path, out, job_id = slow_job(tmp_path, "cancel", env)
    subprocess.run(["scancel", job_id], check=True, env=env)
    runner.communicate(timeout=120)
    (rec,) = read_jsonl(out / "results.jsonl")
    assert rec["status"] == "canceled" and "cancelled" in rec["error"]["message"]
    res = cli("run", str(path), "--out", str(out), env={**fault_env, **slurm}, timeout=300)
    assert res.returncode == 0, res.stderr
    assert [r["status"] for r in read_jsonl(out / "results.jsonl")] == ["canceled", "success"]


def test_a_runner_killed_mid_suite_reattaches_instead_of_resubmitting(tmp_path, slurm, fault_env):
    runner, path, out, first = slow_job(tmp_path, "reattach", {**os.environ, **fault_env, **slurm})
    runner.send_signal(signal.SIGKILL)
    runner.communicate(timeout=30)
    res = cli("run", str(path), "--out", str(out), env={**fault_env, **slurm}, timeout=300)
    assert res.returncode == 0 and "re-attached to 1 job" in res.stdout, res.stdout + res.stderr
    (rec,) = read_jsonl(out / "results.jsonl")
    assert rec["status"] == "success" and rec["env"]["slurm_job_id"] == first


def test_a_bad_partition_is_one_line_and_exit_2(tmp_path, slurm):
    path = suite(tmp_path, ["full"], name="bad")
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--partition", "nosuch", env=slurm)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Slurm refused the job (partition=nosuch)")
    assert "invalid partition" in lines[0].lower()
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_cpu_cells_ask_for_no_gpu_and_each_job_gets_its_own_limit():
    from bench.execution.slurm import SlurmExecutor
    from bench.suite.executor import SlurmSettings
    from bench.suite.spec import RunSpec

    spec = RunSpec(
        suite="s",
        model="tiny-bert",
        task="toy-cls",
        method="full",
        precision="fp32",
        grad_accum=1,
        device="cpu",
        timeout_s=600,
    )
    ex = SlurmExecutor("slurm", SlurmSettings(partition="debug"), 0.01)
    assert ex.gpus_for(spec) == 0 and ex.gpus_for(RunSpec(**{**spec.to_dict(), "device": "cuda"})) == 1
    assert ex.time_min(spec) == 10 + 1 + 5 and ex.time_min(RunSpec(**{**spec.to_dict(), "timeout_s": 60})) == 7


def test_a_cell_over_two_nodes_is_one_job_with_a_task_and_its_gpus_on_each_node(tmp_path):
    from bench.execution.slurm import SlurmExecutor
    from bench.suite.executor import SlurmSettings
    from bench.suite.spec import RunSpec

    distributed = {"nproc": 4, "strategy": "fsdp", "nnodes": 2, "timeout_s": 300}
    spec = RunSpec(suite="s", model="tiny-llama", task="reverse", method="full", precision="bf16", grad_accum=1,
                   batch_size=8, device="cuda", distributed=distributed)  # fmt: skip
    ex = SlurmExecutor("slurm", SlurmSettings(partition="debug"), 0.01)
    params = ex._executor(tmp_path, spec)._executor.parameters
    assert (params["nodes"], params["ntasks_per_node"], params["gpus_per_node"]) == (2, 1, 4), params
    assert spec.world_size == 8 and spec.run_id.endswith("--fsdp4x2")
