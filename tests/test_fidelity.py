"""GPU fidelity and cell overhead, checked on CPU: fixed-shape batches without a mask, phases in the record,
per-phase memory/energy fields with reasons, models built on their target device, quantization in memory,
a fork server that never touches CUDA, pure cost cells, and checkpoints in the dtype a user ships."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from bench.tasks.base import TaskContext
from bench.tasks.synthetic import RandomLM, RandomLMOptions
from conftest import run_cell_inproc

VOCAB64 = type("C", (), {"vocab_size": 64})()

PHASES = ["import", "load", "data", "apply", "eval_before", "train", "train_timed", "eval_after", "save"]


def test_fixed_length_batches_carry_no_mask_and_keep_one_shape():
    task = RandomLM(RandomLMOptions(n_train=32, n_eval=2), TaskContext(seq_len=16, seed=0, model_config=VOCAB64))
    task.load()
    batches = [task.collate(task.train[i : i + 4]) for i in range(0, 32, 4)]
    assert all("attention_mask" not in b for b in batches)
    assert {tuple(b["input_ids"].shape) for b in batches} == {(4, 16)}
    padded = RandomLM(
        RandomLMOptions(n_train=8, n_eval=1, variable_length=True),
        TaskContext(seq_len=16, seed=0, model_config=VOCAB64),
    )
    padded.load()
    assert "attention_mask" in padded.collate(padded.train[:8])  # padding needs the mask


def test_cost_cell_trains_on_one_shape_and_counts_real_and_padded_tokens(tmp_path):
    res = run_cell_inproc(tmp_path, task="random-lm", method="lora", steps=5, grad_accum=2, save_checkpoint=False)
    m = res["metrics"]
    assert res["status"] == "success", res.get("error")
    assert m["distinct_batch_shapes"] == 1
    assert m["timed_tokens"] == m["timed_padded_tokens"] == 4 * 8 * 16  # 4 timed steps x batch 8 x seq 16
    assert m["tokens_per_s"] == pytest.approx(m["padded_tokens_per_s"])


def test_padded_task_says_how_much_padding_it_computed(tmp_path):
    res = run_cell_inproc(tmp_path, task="toy-cls", method="lora", steps=5, save_checkpoint=False)
    m = res["metrics"]
    assert m["timed_tokens"] < m["timed_padded_tokens"] and m["tokens_per_s"] < m["padded_tokens_per_s"]


def test_records_carry_phases_and_per_phase_fields_with_reasons(tmp_path):
    res = run_cell_inproc(tmp_path, task="random-lm", method="lora", steps=4)
    assert res["status"] == "success", res.get("error")
    assert list(res["phases"]) == PHASES
    for span in res["phases"].values():
        assert span["end_unix"] >= span["start_unix"]
    assert res["phases"]["train"]["start_unix"] <= res["phases"]["train_timed"]["start_unix"]
    assert res["timings"]["time_train_s"] == pytest.approx(res["phases"]["train"]["duration_s"])
    marks = (tmp_path / "phases.jsonl").read_text().splitlines()
    assert len(marks) == 2 * len(PHASES)  # written live, so a cell that dies keeps them


def test_nvml_fields_are_null_with_reasons_on_cpu(tmp_path):
    from bench.results.cell_result import CellResult, Status
    from bench.results.record import CellExit, build_record
    from bench.suite.spec import RunSpec
    from conftest import SPEC_BASE

    rec = build_record(RunSpec.from_dict(SPEC_BASE), CellResult(status=Status.SUCCESS), CellExit(0), _cpu_parent())
    for key in ("train_peak_nvml_process_mib", "train_energy_j", "energy_per_token_j", "energy_j"):
        assert rec.metrics[key] is None and "NVML" in rec.missing_reason[key]


def _cpu_parent():
    from bench.trackers import nvml

    metrics, missing, phases = nvml.attribute(nvml.Sampler(None, 0), {}, 100, "NVML unavailable: no driver")
    return {"metrics": metrics, "missing_reason": missing, "phases": phases}


class DeviceLog(TorchDispatchMode):
    """Records the device and size of every tensor an op creates."""

    def __init__(self):
        super().__init__()
        self.created = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.created.append((t.device.type, t.numel()))
        return out


def test_a_named_config_is_built_on_its_target_device_never_on_cpu():
    """`meta` stands in for `cuda` here: the build must create every tensor on the target device."""
    from bench.models.loading import load_model

    with DeviceLog() as log:
        loaded = load_model("tiny-llama", "causal_lm", None, 0, device="meta", dtype="bfloat16")
    params = list(loaded.model.parameters())
    assert {p.device.type for p in params} == {"meta"} and {p.dtype for p in params} == {torch.bfloat16}
    on_cpu = [n for device, n in log.created if device == "cpu" and n > 64]
    assert not on_cpu, f"tensors materialised on CPU: {on_cpu[:5]}"
    assert sum(n for device, n in log.created if device == "meta") >= sum(p.numel() for p in params)


def test_quantized_config_cells_do_no_disk_round_trip(tmp_path, monkeypatch):
    import tempfile

    import transformers

    def no_disk(*args, **kwargs):
        raise AssertionError("a quantized config model went through the disk")

    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_disk)
    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", no_disk)
    res = run_cell_inproc(
        tmp_path, method="lora", precision="nf4", allow_emulated_precision=True, save_checkpoint=False
    )
    assert res["status"] == "success", res.get("error")
    assert res["dtypes"]["quantized_layers"] == ["Linear4bit"]


def test_eval_before_can_be_skipped_for_pure_cost_cells(tmp_path):
    res = run_cell_inproc(
        tmp_path, task="reverse", method="lora", eval_before=False, steps=3, task_options={"n_train": 16, "n_eval": 4}
    )
    m, why = res["metrics"], res["missing_reason"]
    assert res["status"] == "success" and "eval_before" not in res["phases"]
    assert m["score_before"] is None and "eval_before is false" in why["score_before"]
    assert m["forgetting_delta"] is None and "eval_before is false" in why["forgetting_delta"]
    assert m["score_after"] is not None


def test_full_fine_tuning_ships_its_checkpoint_in_the_run_dtype(tmp_path):
    from safetensors import safe_open

    res = run_cell_inproc(tmp_path, method="full", precision="bf16", allow_emulated_precision=True)
    assert res["status"] == "success", res.get("error")
    assert res["checkpoint"]["dtype"] == "bfloat16" and res["dtypes"]["trainable_weight_dtype"] == "float32"
    with safe_open(str(tmp_path / "checkpoint" / "model.safetensors"), "pt") as fh:
        assert {fh.get_tensor(k).dtype for k in fh.keys()} == {torch.bfloat16}


@pytest.mark.slow
def test_fork_server_never_initialises_cuda_and_refuses_a_preload_that_does(tmp_path):
    """A sitecustomize spy records any CUDA initialisation in the server; a preload that reports CUDA as
    initialised makes the launcher refuse to start with a clear error."""
    from bench.execution.launchers import ForkServerLauncher, LauncherError

    spy = tmp_path / "spy"
    spy.mkdir()
    marker = tmp_path / "cuda-initialised"
    (spy / "sitecustomize.py").write_text(
        textwrap.dedent(f"""
        import torch.cuda
        def _spy(*a, **k):
            open({str(marker)!r}, "w").write("yes")
            raise RuntimeError("CUDA initialised in the fork server")
        torch.cuda._lazy_init = _spy
        torch.cuda.init = _spy
        """)
    )
    (spy / "touches_cuda.py").write_text("import torch\ntorch.cuda.is_initialized = lambda: True\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(spy), os.environ.get("PYTHONPATH", "")])}
    with pytest.raises(LauncherError, match="initialised CUDA.*--launcher spawn"):
        ForkServerLauncher(tmp_path / "server.log").start({**env, "PEFT_BENCH_FORKSERVER_PRELOAD": "touches_cuda"})
    assert not marker.exists(), (tmp_path / "server.log").read_text()  # its whole preload never touched CUDA


def test_imports_a_cell_needs_are_timed_in_its_import_phase():
    code = (
        "import json, sys, tempfile, pathlib\n"
        "from conftest import SPEC_BASE\n"
        "from bench.cell import run_cell\n"
        "d = pathlib.Path(tempfile.mkdtemp())\n"
        "(d / 'spec.json').write_text(json.dumps({**SPEC_BASE, 'method': 'lora', 'save_checkpoint': False}))\n"
        "r = run_cell(d).to_dict()\n"
        "print(json.dumps([r['status'], r['heavy_modules_loaded'], r['notes']]))\n"
    )
    tests = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tests, timeout=300)
    status, heavy, notes = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    assert status == "success" and "peft" in heavy and not any("after the import phase" in n for n in notes)
