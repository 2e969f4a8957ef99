"""Hardware FLOPs are counted by torch on the cell's own model as applied, not guessed from layer names."""

from __future__ import annotations

import pytest

from conftest import run_cell_inproc

LM = {"task": "random-lm", "task_options": {"n_train": 16, "n_eval": 4}, "batch_size": 4, "seq_len": 32}
METHODS = {
    "full": {"name": "full"},
    "lora": {"name": "lora", "r": 4, "target_modules": "all-linear"},
    "ia3": {"name": "ia3"},
    "prompt": {"name": "prompt", "num_virtual_tokens": 4},
    "prefix": {"name": "prefix", "num_virtual_tokens": 4},
}


def cell(tmp_path, key, **kw):
    opts = {k: v for k, v in METHODS[key].items() if k != "name"}
    spec = {
        **LM,
        "method": METHODS[key]["name"],
        "method_options": opts,
        "steps": 2,
        "warmup_steps": 1,
        "eval_before": False,
        "save_checkpoint": False,
        **kw,
    }
    res = run_cell_inproc(tmp_path / f"{key}-{kw.get('grad_ckpt', False)}", **spec)
    assert res["status"] == "success", res.get("error")
    return res


def torch_count(key, grad_ckpt=False):
    """One forward + backward of the same model as applied, counted by FlopCounterMode outside the harness."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench import registry
    from bench.methods.base import MethodContext
    from bench.models.loading import load_model
    from bench.options import parse_options

    model = load_model("tiny-llama", "causal_lm", None, 0, device="cpu", dtype="float32", quant=None, options={}).model
    cls = registry.load_method(METHODS[key]["name"])
    cfg, problems = parse_options(cls.config_cls, {k: v for k, v in METHODS[key].items() if k != "name"}, "method")
    assert not problems
    ctx = MethodContext(
        model_kind="causal_lm",
        precision="fp32",
        steps=2,
        seed=0,
        quantized=False,
        tokenizer=None,
        device="cpu",
        grad_ckpt=grad_ckpt,
        num_labels=None,
        evaluate=None,
        load_frozen_model=None,
        load_method=registry.load_method,
    )
    model = cls(cfg, ctx).apply(model)
    if grad_ckpt:
        model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.get_base_model().enable_input_require_grads()
    ids = torch.randint(3, 100, (LM["batch_size"], LM["seq_len"]))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=ids).loss.backward()
    return counter.get_total_flops() / ids.numel()


@pytest.mark.parametrize("key", list(METHODS))
def test_hardware_flops_match_torchs_counter_on_the_same_step(tmp_path, key):
    recorded = cell(tmp_path, key)["metrics"]["hardware_flops_per_token"]
    assert recorded == pytest.approx(torch_count(key), rel=0.05)


def test_lora_computes_less_than_full_and_prompt_methods_pay_backward(tmp_path):
    flops = {k: cell(tmp_path, k)["metrics"] for k in ("full", "lora", "prefix")}
    assert flops["lora"]["hardware_flops_per_token"] < flops["full"]["hardware_flops_per_token"]
    # every method pays the same model-FLOPs convention over its own total parameters
    assert flops["full"]["model_flops_per_token"] == 6 * flops["full"]["total_params"]
    # prefix tuning back-propagates through every layer: well above a forward alone (2 x params per token)
    assert flops["prefix"]["hardware_flops_per_token"] > 1.5 * 2 * flops["full"]["total_params"]


def test_gradient_checkpointing_adds_one_forward(tmp_path):
    plain = cell(tmp_path, "lora")["metrics"]["hardware_flops_per_token"]
    ckpt = cell(tmp_path, "lora", grad_ckpt=True)["metrics"]["hardware_flops_per_token"]
    forward = torch_forward("lora")
    assert ckpt - plain == pytest.approx(forward, rel=0.05)


def torch_forward(key):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models.loading import load_model

    model = load_model("tiny-llama", "causal_lm", None, 0, device="cpu", dtype="float32", quant=None, options={}).model
    ids = torch.randint(3, 100, (LM["batch_size"], LM["seq_len"]))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
    return counter.get_total_flops() / ids.numel()


def test_no_warm_up_step_means_no_hardware_count_with_the_reason(tmp_path):
    res = cell(tmp_path, "full", warmup_steps=0)
    assert res["metrics"]["hardware_flops_per_token"] is None
    assert "warmup_steps 0" in res["missing_reason"]["hardware_flops_per_token"]
