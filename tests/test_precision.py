"""Precision and gradient accumulation are real axes: measured dtypes, exact accumulation, honest unsupported."""

import math

import numpy as np
import pytest

from conftest import run_cell_inproc


@pytest.mark.parametrize("model, task", [("tiny-llama", "random-lm"), ("tiny-bert", "toy-cls")])
def test_grad_accum_1_2_4_give_the_same_loss_curve(tmp_path, model, task):
    curves = {}
    for ga in (1, 2, 4):
        res = run_cell_inproc(
            tmp_path / f"ga{ga}",
            model=model,
            task=task,
            grad_accum=ga,
            batch_size=8,
            steps=5,
            lr=1e-2,
            save_checkpoint=False,
        )
        assert res["status"] == "success", res.get("error")
        assert res["metrics"]["micro_batch_size"] == 8 // ga
        curves[ga] = res["loss_curve"]
    assert len(curves[1]) == 5
    np.testing.assert_allclose(curves[2], curves[1], rtol=1e-4)
    np.testing.assert_allclose(curves[4], curves[1], rtol=1e-4)
    assert curves[1][-1] != curves[1][0]  # parameters moved


def test_padding_aware_token_averaging_differs_from_naive_mean(tmp_path):
    """Variable-length causal-LM batches: the per-micro-batch mean would not match; ours does (above)."""

    from bench.tasks.base import TaskContext
    from bench.tasks.synthetic import RandomLM, RandomLMOptions

    task = RandomLM(
        RandomLMOptions(n_train=8, n_eval=1, variable_length=True),
        TaskContext(seq_len=16, seed=0, model_config=type("C", (), {"vocab_size": 64})()),
    )
    task.load()
    full = task.collate(task.train[:8])
    halves = [task.collate(task.train[:4]), task.collate(task.train[4:8])]
    assert task.target_count(full) == sum(task.target_count(h) for h in halves)
    assert task.target_count(halves[0]) != task.target_count(halves[1])


def test_bf16_on_cpu_records_dtypes_and_finite_loss(tmp_path):
    res = run_cell_inproc(tmp_path, method="lora", precision="bf16", steps=4, allow_emulated_precision=True)
    assert res["status"] == "success", res.get("error")
    d = res["dtypes"]
    assert d["compute_dtype"] == "bfloat16"
    assert d["trainable_weight_dtype"] == "float32"
    assert d["base_weight_dtype"] == "bfloat16"
    assert all(math.isfinite(x) for x in res["loss_curve"])


def test_full_bf16_keeps_fp32_master_weights(tmp_path):
    res = run_cell_inproc(tmp_path, method="full", precision="bf16", allow_emulated_precision=True)
    assert res["status"] == "success", res.get("error")
    assert res["dtypes"]["trainable_weight_dtype"] == "float32" and res["dtypes"]["base_weight_dtype"] is None


def test_fp16_on_cpu_is_unsupported_never_silently_fp32(tmp_path):
    res = run_cell_inproc(tmp_path, method="lora", precision="fp16")
    assert res["status"] == "unsupported"
    assert "CUDA" in res["error"]["message"]
    assert res["loss_curve"] is None  # nothing trained


@pytest.mark.parametrize(
    "precision, layer, storage", [("nf4", "Linear4bit", "uint8"), ("int8", "Linear8bitLt", "int8")]
)
def test_quantized_base_trains_lora_on_cpu_and_says_so(tmp_path, precision, layer, storage):
    res = run_cell_inproc(tmp_path, method="lora", precision=precision, allow_emulated_precision=True)
    assert res["status"] == "success", res.get("error")
    d = res["dtypes"]
    assert d["quantized_layers"] == [layer]
    assert storage in d["base_weight_dtypes"]
    assert d["trainable_weight_dtype"] == "float32" and d["compute_dtype"] == "bfloat16"
    assert res["env"]["device"] == "cpu"
    assert all(math.isfinite(x) for x in res["loss_curve"])


@pytest.mark.parametrize(
    "method, precision, layer", [("qlora", "nf4", "Linear4bit"), ("lora8bit", "int8", "Linear8bitLt")]
)
def test_quantized_lora_recipes_on_an_encoder_with_biases(tmp_path, method, precision, layer):
    res = run_cell_inproc(
        tmp_path, method=method, precision=precision, model="tiny-bert", allow_emulated_precision=True
    )
    assert res["status"] == "success", res.get("error")
    assert res["dtypes"]["quantized_layers"] == [layer]


def test_bitfit_bf16_keeps_modules_with_trained_biases_in_fp32(tmp_path):
    res = run_cell_inproc(tmp_path, model="tiny-bert", method="bitfit", precision="bf16", allow_emulated_precision=True)
    assert res["status"] == "success", res.get("error")
    d = res["dtypes"]
    assert d["trainable_weight_dtype"] == "float32" and d["base_weight_dtypes"]["bfloat16"] > 0
