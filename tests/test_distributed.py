"""Cells over two gloo ranks on CPU (torchrun through bench.cell.ranks): DDP LoRA and FSDP2 full fine-tuning train
what one process trains at the same global batch, the record is the whole cell's with every rank's peaks, and a
rank killed mid-step fails the cell naming that rank with no process left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from bench.errors import SuiteError
from bench.suite.load import expand, parse_suite
from conftest import cli, make_suite, mc_task, read_jsonl

DDP2, FSDP2 = {"nproc": 2, "strategy": "ddp"}, {"nproc": 2, "strategy": "fsdp"}
SMALL = dict(steps=5, warmup_steps=2, batch_size=8, seq_len=24, eval_before=False, device="cpu")


@pytest.mark.slow
def test_ddp_lora_and_fsdp_full_follow_the_one_process_loss_curve(tmp_path):
    path = make_suite(
        tmp_path,
        {"method": ["lora", "full"], "grad_accum": [2], "task": ["reverse"]},
        **SMALL,
    )
    text = path.read_text() + (
        "include:\n  - {method: lora, distributed: {nproc: 2, strategy: ddp}}\n"
        "  - {method: full, distributed: {nproc: 2, strategy: fsdp}}\n"
        "  - {method: lora, distributed: {nproc: 2, strategy: ddp}, compile: {backend: aot_eager}}\n"
    )
    path.write_text(text)
    res = cli("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    recs = {r["run_id"]: r for r in read_jsonl(tmp_path / "out" / "results.jsonl")}
    one_id = "tiny-llama--reverse--{}--fp32--ga2"
    for method, strategy in (("lora", "ddp"), ("full", "fsdp")):
        one, two = recs[one_id.format(method)], recs[one_id.format(method) + f"--{strategy}2"]
        assert two["status"] == "success", two.get("error")
        assert two["loss_curve"] == pytest.approx(one["loss_curve"], rel=1e-3)
        assert two["env"]["distributed"] == {"world_size": 2, "strategy": strategy, "backend": "gloo", "nnodes": 1}
        m1, m2 = one["metrics"], two["metrics"]
        assert m2["world_size"] == 2 and "world_size" not in m1
        # global figures, never per rank or per shard
        assert (m2["trainable_params"], m2["total_params"]) == (m1["trainable_params"], m1["total_params"])
        assert m2["timed_tokens"] == m1["timed_tokens"] and len(two["step_times_s"]) == len(one["step_times_s"])
        assert [r["rank"] for r in two["ranks"]] == [0, 1]
        assert all(r["peak_rss_mib"] > 0 and r["timed_tokens"] == m1["timed_tokens"] / 2 for r in two["ranks"])
        assert m2["rank_peak_rss_mib"] == max(r["peak_rss_mib"] for r in two["ranks"])
        assert m2["checkpoint_bytes"] == pytest.approx(m1["checkpoint_bytes"], rel=0.01)  # written once
        assert m2["hardware_flops_per_token"] == pytest.approx(m1["hardware_flops_per_token"], rel=1e-6)
        # the collectives timed, every rank: DDP's all-reduces through its communication hook, FSDP2's all-gathers
        # and reduce-scatters through its custom collectives
        kinds = {"ddp": {"all_reduce"}, "fsdp": {"all_gather", "reduce_scatter"}}[strategy]
        assert all(set(r["comm_s_by_kind"]) == kinds and r["comm_s"] > 0 for r in two["ranks"]), two["ranks"]
        assert 0 < m2["comm_share"] < 1
    # compiled DDP (the DDP module compiled, as torch's docs do): the same curve, one all-reduce per effective batch
    compiled = recs[one_id.format("lora") + "--compile-aot_eager--ddp2"]
    assert compiled["status"] == "success", compiled.get("error")
    assert compiled["loss_curve"] == pytest.approx(recs[one_id.format("lora")]["loss_curve"], rel=1e-3)
    assert compiled["metrics"]["compiled_graphs"] >= 1 and compiled["metrics"]["compile_overhead_s"] is not None
    assert [r["comm_calls"] for r in compiled["ranks"]] == [len(compiled["step_times_s"])] * 2
    ranks_dirs = list((tmp_path / "out" / "runs").glob("*fsdp2/ranks/1/result.json"))
    assert len(ranks_dirs) == 1  # rank 1 kept its own result beside rank 0's


def test_a_killed_rank_fails_the_cell_naming_it_and_leaves_no_process(tmp_path, fault_env):
    marker = tmp_path / "training.pid"
    slow = {"name": "fault-slow", "marker": str(marker), "step_sleep_s": 0.5, "label": "slow", "distributed": DDP2}
    path = make_suite(tmp_path, {"method": [slow]}, steps=200, device="cpu", timeout_s=300)
    runner = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "run", str(path), "--out", str(tmp_path / "out"), "--no-forecast"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **fault_env},
    )
    t0 = time.time()
    while not (marker.exists() and marker.read_text()) and time.time() - t0 < 120:
        time.sleep(0.05)
    tree = psutil.Process(runner.pid).children(recursive=True)
    ranks = {int(p.environ().get("RANK", -1)): p for p in tree if "bench.cell" in " ".join(p.cmdline())}
    ranks.pop(-1, None)  # the agent
    assert sorted(ranks) == [0, 1], [p.cmdline() for p in tree]
    os.kill(ranks[1].pid, signal.SIGKILL)
    out, err = runner.communicate(timeout=120)
    assert runner.returncode == 1, out + err
    (rec,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert rec["status"] == "failed" and rec["error"]["rank"] == 1, rec["error"]
    assert "rank 1" in rec["error"]["message"] and "signal 9 (SIGKILL)" in rec["error"]["message"]
    assert time.time() - t0 < 100  # the killed rank ended the cell, not the 300 s timeout
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_ddp_all_reduces_once_per_effective_batch_not_per_micro_batch():
    """With grad_accum 2 the first micro-batch's forward and backward run under no_sync: DDP decides in the forward
    whether its backward all-reduces, so wrapping only the backward communicated on every micro-batch."""
    from contextlib import nullcontext

    import torch
    import torch.distributed as dist

    from bench.cell.distributed import Ranks, wrap
    from bench.cell.train import forward_backward

    class Task:
        def loss_and_logits(self, model, batch, total):
            out = model(batch["x"])
            return out.sum() / total, out

    class Method:
        def loss(self, model, task, step):
            return task.loss_and_logits(model, step.batch, step.total_targets)[0]

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ranks = Ranks(0, 1, 0, "ddp", "gloo")
        model = wrap(torch.nn.Linear(4, 4), ranks, "no", "cpu")
        micro = [{"x": torch.randn(2, 4)}, {"x": torch.randn(2, 4)}]
        ranks.comm.timed_start()
        forward_backward(model, Task(), Method(), micro, [2, 2], 4, nullcontext, None, ranks, "cpu")
        assert ranks.comm.timed_launches == 1
    finally:
        dist.destroy_process_group()


def test_on_a_gpu_collectives_are_timed_by_cuda_events_read_once_after_training(monkeypatch):
    """NCCL's futures complete when the work is enqueued: a host clock would time the launch. The clock records
    an event at the launch and one where the completion is ordered, and reads them only when asked."""
    import torch

    from bench.cell.comm import CommClock, finish

    log = []

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.at = None

        def record(self):
            self.at = len(log) * 100.0  # the device's clock, ms: 100 ms per thing that happened
            log.append("record")

        def synchronize(self):
            log.append("sync")

        def elapsed_time(self, end):
            return end.at - self.at

    class Work:  # an asynchronous collective: its completion is its future's
        def __init__(self):
            self.callbacks = []

        def get_future(self):
            return self

        def then(self, callback):
            self.callbacks.append(callback)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    clock = CommClock(cuda=True)
    clock.hooked = True
    finish(None, clock.launch("all_gather"))  # before the timed steps: not counted
    assert log == [] and clock.timed_launches == 0
    clock.timed_start()
    finish(None, clock.launch("all_gather"))  # a blocking one: launch, then its completion on the stream
    work = Work()
    finish(work, clock.launch("reduce_scatter"))
    log.append("compute")
    work.callbacks[0](None)  # its future completes later
    assert "sync" not in log  # nothing waits inside the steps
    assert clock.by_kind() == {"all_gather": 0.1, "reduce_scatter": 0.2}
    assert log.count("sync") == 2 and clock.timed_launches == 2
    assert clock.by_kind() == {"all_gather": 0.1, "reduce_scatter": 0.2}  # read once: not added again


def suite_data(**distributed):
    return {
        "defaults": {"batch_size": 6, "device": "cpu"},
        "matrix": {
            "model": ["tiny-llama"],
            "task": ["reverse"],
            "method": ["lora"],
            "precision": ["fp32"],
            "grad_accum": [1],
            "distributed": [distributed],
        },
    }


@pytest.mark.parametrize(
    "distributed, message",
    [
        ({"nproc": 4}, "batch_size 6 is not divisible by grad_accum x ranks (1 x 4)"),
        ({"nproc": 2, "strategy": "zero"}, "unknown strategy 'zero'; valid: ddp, fsdp"),
        ({"nproc": 2, "nnodes": 0}, "nproc and nnodes must be >= 1"),
        ({"nprocs": 2}, "nprocs: unknown option (did you mean 'nproc'?); valid: nproc, strategy"),
    ],
)
def test_a_distributed_setting_that_cannot_run_is_refused_at_load(distributed, message):
    with pytest.raises(SuiteError) as err:
        parse_suite(suite_data(**distributed), "s.yaml", [])
    assert message in str(err.value), str(err.value)


def test_inference_runs_on_a_ddp_cell_and_is_refused_on_an_fsdp_one():
    data = suite_data(nproc=2, strategy="fsdp")
    data["defaults"]["inference"] = {"new_tokens": 4}
    with pytest.raises(SuiteError) as err:
        parse_suite(data, "s.yaml", [])
    assert "inference needs the whole model on one rank; use strategy ddp" in str(err.value)
    data["matrix"]["distributed"] = [{"nproc": 2, "strategy": "ddp"}]
    (spec,) = expand(parse_suite(data, "s.yaml", []))
    assert spec.inference == {"new_tokens": 4} and spec.world_size == 2


def test_the_run_id_names_the_ranks_and_one_process_cells_keep_theirs():
    (spec,) = expand(parse_suite(suite_data(nproc=2), "s.yaml", []))
    assert spec.run_id.endswith("--ga1--ddp2") and spec.world_size == 2
    data = suite_data()
    data["matrix"]["distributed"] = [None]
    (one,) = expand(parse_suite(data, "s.yaml", []))
    assert one.run_id == "tiny-llama--reverse--lora--fp32--ga1" and one.distributed is None


def test_the_estimate_is_per_rank_and_fsdp_divides_what_it_shards():
    from bench.plan.memory import estimate_spec

    data = suite_data()
    data["defaults"]["batch_size"] = 8
    data["matrix"]["distributed"] = [None, {"nproc": 2, "strategy": "ddp"}, {"nproc": 2, "strategy": "fsdp"}]
    one, ddp, fsdp = (estimate_spec(s)[0] for s in expand(parse_suite(data, "s.yaml", [])))
    assert ddp.weights_mib == one.weights_mib and ddp.optimizer_mib == one.optimizer_mib
    assert ddp.activations_mib < one.activations_mib  # half the micro-batch per rank
    assert fsdp.weights_mib == pytest.approx(one.weights_mib / 2) and fsdp.gradients_mib == pytest.approx(
        one.gradients_mib / 2
    )
    assert fsdp.activations_mib == ddp.activations_mib


@pytest.mark.slow
def test_a_two_gpu_cell_samples_both_gpus_and_a_wider_one_is_unsupported(tmp_path):
    import fake_nvml

    fake = {
        "devices": [
            {"name": "FakeGPU0", "used_mib": 100, "processes": [], "tree_mib": 300},
            {"name": "FakeGPU1", "used_mib": 100, "processes": [], "tree_mib": 500},
        ],
        "watts": 100,
    }
    methods = [{"name": "lora", "distributed": DDP2}, {"name": "lora", "distributed": {**DDP2, "nproc": 3}}]
    path = make_suite(tmp_path, {"method": methods}, steps=3, warmup_steps=1, eval_before=False, batch_size=6)
    res = cli("run", str(path), "--out", str(tmp_path / "out"), "--no-fit-check", env=fake_nvml.env(fake))
    recs = {r["run_id"].rsplit("--", 1)[-1]: r for r in read_jsonl(tmp_path / "out" / "results.jsonl")}
    wide = recs["ddp3"]
    assert wide["status"] == "unsupported", wide
    assert "3 ranks need 3 GPUs; this run has 2 (0, 1;" in wide["error"]["message"], res.stdout + res.stderr
    rec = recs["ddp2"]
    assert rec["status"] == "success", (rec.get("error"), res.stderr)
    m, ranks = rec["metrics"], rec["ranks"]
    assert rec["env"]["nvml_gpu_indices"] == [0, 1] and m["nvml_gpus"] == 2
    assert [r["train_peak_nvml_process_mib"] for r in ranks] == [300, 500]  # rank i: the i-th GPU
    assert m["train_peak_nvml_process_mib"] == 500  # the headline: the largest GPU
    assert m["train_peak_nvml_mib"] == 600
    assert m["train_energy_j"] == pytest.approx(sum(r["train_energy_j"] for r in ranks))  # the GPUs' energy summed
    # the same cell as a submitit job (what a Slurm node runs): its ranks see and NVML samples the whole allocation
    out = tmp_path / "job"
    cli("run", str(path), "--out", str(out), "--executor", "submitit-local", "--only", "*ddp2", env=fake_nvml.env(fake))
    (job,) = read_jsonl(out / "results.jsonl")
    assert job["status"] == "success", job.get("error")
    assert job["env"]["nvml_gpu_indices"] == [0, 1] and job["metrics"]["nvml_gpus"] == 2
    assert [r["train_peak_nvml_process_mib"] for r in job["ranks"]] == [300, 500]


@pytest.mark.slow
def test_two_nodes_meet_at_the_first_nodes_rendezvous_and_train_what_one_process_trains(tmp_path):
    """What a Slurm job over two nodes starts (an agent per node, told its node and the rendezvous on the first),
    here as two agents on this host: a real c10d rendezvous of two one-rank nodes."""
    import socket

    from bench.cell import run_cell
    from bench.results.rundir import RunDir

    data = suite_data(nproc=1, strategy="ddp", nnodes=2)
    data["matrix"]["distributed"] = [None, {"nproc": 1, "strategy": "ddp", "nnodes": 2}]
    data["defaults"].update(steps=4, warmup_steps=1, seq_len=24, eval_before=False, save_checkpoint=False)
    data["defaults"]["inference"] = {"new_tokens": 4}  # rank 0's, after the other node's rank ended
    _, include = mc_task(tmp_path, n=8)  # lm-eval on every rank's replica: the score one process gives
    data["defaults"]["lm_eval"] = {"tasks": ["local_mc"], "include_path": include}
    data["matrix"]["model"] = [{"name": "tiny-llama", "tokenizer": "minilm-l6"}]
    one, two = expand(parse_suite(data, "s.yaml", []))
    assert two.run_id.endswith("--ddp1x2") and two.world_size == 2
    dirs = {}
    for spec in (one, two):
        dirs[spec.run_id] = tmp_path / spec.run_id
        dirs[spec.run_id].mkdir()
        (dirs[spec.run_id] / "spec.json").write_text(spec.to_json())
    reference = run_cell(dirs[one.run_id])  # in this process
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    agents = []
    for node in (0, 1):
        env = {**os.environ, "PEFT_BENCH_NODE_RANK": str(node), "PEFT_BENCH_RDZV_ENDPOINT": f"127.0.0.1:{port}"}
        agents.append(subprocess.Popen([sys.executable, "-m", "bench.cell.ranks", str(dirs[two.run_id])], env=env))
    assert [a.wait(timeout=240) for a in agents] == [0, 0]
    rec = RunDir(dirs[two.run_id]).read_result()
    assert rec.status == "success", rec.error
    assert rec.env["distributed"] == {"world_size": 2, "strategy": "ddp", "backend": "gloo", "nnodes": 2}
    assert rec.loss_curve == pytest.approx(reference.loss_curve, rel=1e-3)
    assert [r["rank"] for r in rec.ranks] == [0, 1]
    assert rec.metrics["inference_tokens_per_s_merged"] > 0 and reference.metrics["inference_tokens_per_s_merged"] > 0
    score = rec.metrics["lm_eval_local_mc_acc_after"]
    assert score is not None and score == reference.metrics["lm_eval_local_mc_acc_after"]


def test_a_cell_over_two_nodes_is_refused_off_slurm(tmp_path, capsys):
    import yaml

    from bench.cli import main

    data = suite_data(nproc=1, strategy="ddp", nnodes=2)
    path = tmp_path / "local.yaml"
    path.write_text(yaml.safe_dump({"name": "nodes", **data}))
    assert main(["run", str(path), "--out", str(tmp_path / "out"), "--no-forecast"]) == 2
    assert "nnodes > 1 runs on Slurm only (executor: {kind: slurm} or --executor slurm)" in capsys.readouterr().err


def test_the_report_names_a_cell_as_its_run_id_does_nodes_included():
    from bench.report.frame import flatten
    from bench.suite.defaults import DistributedOptions

    for d in ({"nproc": 8, "strategy": "fsdp", "nnodes": 2}, {"nproc": 8, "strategy": "fsdp", "nnodes": 1}):
        assert flatten({"run_id": "x", "spec": {"distributed": d}})["distributed"] == DistributedOptions(**d).label()


def test_the_first_node_takes_in_every_nodes_figures_and_a_silent_node_nulls_the_headline(tmp_path, monkeypatch):
    """Rank rows are matched by node and local rank (torchrun may number node 1's rank 0); the headline memory is
    the largest node's and the energy the sum; a node whose file never came (or is another job's) nulls them."""
    from bench.execution.nodes import node_file, take_in
    from bench.results.cell_result import CellResult, Status
    from bench.results.record import Record
    from bench.results.rundir import RunDir, write_json_atomic

    monkeypatch.setenv("SLURM_JOB_ID", "7")

    def record():
        metrics = {"train_peak_rss_mib": 500.0, "train_peak_nvml_process_mib": 300.0, "train_energy_j": 2.0}
        node0 = {"train_peak_nvml_process_mib": 300.0}  # the first node's own GPU, as its supervisor recorded it
        rows = [{"rank": 0, "node": 1, "local_rank": 0}, {"rank": 1, "node": 0, "local_rank": 0, **node0}]
        return Record(run_id="x", metrics=metrics, gpu_index=0, ranks=rows)

    def send(node, job, rss, nvml, energy, agent_exit_code=0):
        path = node_file(tmp_path, node)
        path.parent.mkdir(parents=True, exist_ok=True)
        figures = {"train_peak_nvml_process_mib": nvml, "train_energy_j": energy}
        write_json_atomic(path, {"node": node, "host": f"h{node}", "job_id": job, "nvml_gpu_indices": [0],
                                 "metrics": {"train_peak_rss_mib": rss, **figures}, "missing": {},
                                 "per_gpu": [figures], "notes": [], "agent_exit_code": agent_exit_code})  # fmt: skip

    send(1, "7", 800.0, 700.0, 3.0)
    rec = take_in(record(), tmp_path, 2, wait_s=0.2)
    assert [r["train_peak_nvml_process_mib"] for r in rec.ranks] == [700.0, 300.0]  # rank 0 ran on node 1
    m = rec.metrics
    assert (m["train_peak_rss_mib"], m["train_peak_nvml_process_mib"], m["train_energy_j"]) == (800.0, 700.0, 5.0)
    assert [n["host"] for n in rec.nodes][1:] == ["h1"] and m["nvml_gpus"] == 2
    (tmp_path / "nodes" / "1" / "measured.json").unlink()  # node 1's agent failed: its own verdict is shown
    send(1, "7", 800.0, 700.0, 3.0, agent_exit_code=1)
    RunDir(tmp_path / "nodes" / "1").write_result(
        CellResult(status=Status.FAILED, error={"message": "rank 1 (pid 9) was killed by signal 9 (SIGKILL)"})
    )
    failed = record()
    failed.error = {"type": "rank_failed", "message": "rank 0 (pid 8) exited with code 1"}
    rec = take_in(failed, tmp_path, 2, wait_s=0.2)
    said = "node 1's agent exited with code 1: rank 1 (pid 9) was killed by signal 9 (SIGKILL)"
    assert said in rec.notes and rec.error["nodes"] == {"1": said}
    send(2, "6", 900.0, 900.0, 9.0)  # an earlier job's file: not this cell's
    rec = take_in(record(), tmp_path, 3, wait_s=0.2)
    assert rec.metrics["train_peak_rss_mib"] is None and rec.metrics["train_energy_j"] is None
    assert rec.missing_reason["train_energy_j"].startswith("node 2: sent no figures within 0.2 s")
    assert any(n.startswith("node 2 sent no figures") for n in rec.notes)


def test_compile_and_lm_eval_run_on_a_ddp_cell_and_are_refused_on_an_fsdp_one(tmp_path):
    data = suite_data(nproc=2, strategy="fsdp")
    data["defaults"].update(compile={"backend": "aot_eager"}, warmup_steps=1, lm_eval={"tasks": ["x"]})
    with pytest.raises(SuiteError) as err:
        parse_suite(data, "s.yaml", [])
    for knob in ("compile", "lm_eval"):
        assert f"{knob} is not combined with FSDP cells yet; use strategy ddp for it" in str(err.value)
    data["matrix"]["distributed"] = [{"nproc": 2, "strategy": "ddp"}]
    (spec,) = expand(parse_suite(data, "s.yaml", []))
    assert spec.compile and spec.lm_eval and spec.run_id.endswith("--compile-aot_eager--ddp2")


def test_another_node_starts_its_agent_only_once_the_first_set_up_this_jobs_run_dir(tmp_path, monkeypatch):
    """A Slurm job's tasks start together: an agent started before the first node moved the earlier attempt away and
    wrote spec.json read no spec (or a stale one) and the cell waited out the rendezvous timeout."""
    from bench.execution.nodes import mark_ready, node_file, run_other_node, wait_until_ready

    (spec,) = expand(parse_suite(suite_data(nproc=1, strategy="ddp", nnodes=2, timeout_s=0.5), "s.yaml", []))
    monkeypatch.setenv("SLURM_JOB_ID", "6")
    mark_ready(tmp_path)  # an earlier job's attempt
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert not wait_until_ready(tmp_path, 0.3)
    run_other_node(spec, str(tmp_path), 1, 0.01)  # gives up at the cell's rendezvous timeout, starting nothing
    assert not node_file(tmp_path, 1).exists() and not (tmp_path / "ranks").exists()
    mark_ready(tmp_path)
    assert wait_until_ready(tmp_path, 0.3)


def test_the_fit_check_weighs_a_distributed_cell_against_its_tightest_gpu(tmp_path):
    from bench.execution.base import RunContext
    from bench.execution.gpus import GpuSlot
    from bench.execution.local import FitCheck
    from bench.results.rundir import OutDir

    class Backend:  # GPU 0 empty, GPU 1 nearly full
        def total_mib(self, index):
            return 81920.0

        def used_mib(self, index):
            return 81700.0 if index == 1 else 0.0

    (spec,) = expand(parse_suite(suite_data(nproc=2, strategy="ddp"), "s.yaml", []))
    fits = FitCheck(Backend(), [spec])
    ctx = RunContext(out=OutDir(tmp_path), on_record=print, progress=print, should_stop=lambda: False)
    gpu0, gpu1 = GpuSlot(0, "GPU-0", "G"), GpuSlot(1, "GPU-1", "G")
    assert fits.refuse(spec, gpu0, ctx) is None  # GPU 0 alone has room
    rec = fits.refuse(spec, gpu0, ctx, (gpu1,))
    assert rec is not None and rec.status == "unsupported" and "free on GPU 1" in rec.error["message"]
