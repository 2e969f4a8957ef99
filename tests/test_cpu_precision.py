"""bf16 on a CPU says what it really is: without native bf16 a bf16 (or int8/nf4, bf16 compute) cell is
`unsupported` naming the missing instructions, unless the suite opts in, and then the record says emulated."""

import dataclasses

import pytest

from bench.env import cpu as cpuinfo
from bench.errors import Unsupported
from bench.models.precision import precision_policy
from conftest import run_cell_inproc

AVX2_ONLY = cpuinfo.CpuFacts(
    model="AMD EPYC 7B12", capability="AVX2", flags=("avx2",), onednn_max_isa=None, native_bf16=False, native_fp16=False
)


@pytest.fixture
def avx2_only(monkeypatch):
    monkeypatch.setattr(cpuinfo, "facts", lambda: AVX2_ONLY)


@pytest.fixture
def native_bf16(monkeypatch):
    facts = dataclasses.replace(AVX2_ONLY, model="Sapphire Rapids", flags=("avx512_bf16", "amx_bf16"), native_bf16=True)
    monkeypatch.setattr(cpuinfo, "facts", lambda: facts)


@pytest.mark.parametrize("precision", ["bf16", "nf4", "int8"])
def test_bf16_compute_on_a_cpu_without_native_bf16_is_unsupported_with_the_reason(avx2_only, tmp_path, precision):
    res = run_cell_inproc(tmp_path, method="lora", precision=precision)
    assert res["status"] == "unsupported"
    msg = res["error"]["message"]
    assert "AVX512-BF16 or AMX-BF16" in msg and "AMD EPYC 7B12" in msg and "17x slower" in msg
    assert "allow_emulated_precision" in msg and res["loss_curve"] is None


def test_the_opt_in_runs_it_and_records_emulated(avx2_only, tmp_path):
    res = run_cell_inproc(tmp_path, method="lora", precision="bf16", steps=3, allow_emulated_precision=True)
    assert res["status"] == "success", res.get("error")
    assert res["dtypes"]["emulated"] is True and res["env"]["emulated_precision"] is True


def test_native_bf16_runs_and_is_not_marked(native_bf16):
    assert precision_policy("bf16", "cpu").emulated is False


def test_fp32_and_cuda_cells_are_unaffected(avx2_only):
    assert precision_policy("fp32", "cpu").emulated is False
    from bench.models.precision import _emulated_bf16

    assert _emulated_bf16("bf16", "cuda", allow_emulated=False) is False  # a GPU's bf16 is its own question


def test_cpu_facts_are_recorded_in_env(tmp_path):
    res = run_cell_inproc(tmp_path, method="full", steps=2, save_checkpoint=False)
    env = res["env"]
    assert env["cpu_model"] and env["cpu_capability"] and isinstance(env["cpu_native_bf16"], bool)
    assert isinstance(env["cpu_flags"], list)


def test_onednn_isa_limit_turns_native_bf16_off(monkeypatch):
    cpuinfo.facts.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    try:
        facts = cpuinfo.facts()
        assert facts.native_bf16 is False and facts.onednn_max_isa == "AVX2"
        assert "ONEDNN_MAX_CPU_ISA=AVX2" in facts.missing_bf16()
    finally:
        cpuinfo.facts.cache_clear()


def test_report_marks_emulated_rows():
    from bench import report

    rec = {
        "run_id": "a",
        "status": "success",
        "spec": {"model": "m", "task": "t", "method": "lora", "precision": "bf16", "grad_accum": 1},
        "metrics": {"tokens_per_s": 1.0},
        "dtypes": {"emulated": True},
    }
    assert "bf16 (emulated)" in report.to_markdown(report.records_to_frame([rec]))


def test_unsupported_is_raised_not_silently_fp32(avx2_only):
    with pytest.raises(Unsupported):
        precision_policy("bf16", "cpu")
