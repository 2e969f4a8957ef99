"""The memory estimate against exact counts of the same model: weights, gradients and optimizer state to the byte,
activations against the bytes autograd saves for backward (torch.autograd.graph.saved_tensors_hooks)."""

from __future__ import annotations

import pytest

OPTIONS = {"full": {}, "lora": {"r": 4, "target_modules": "all-linear"}, "ia3": {}, "prompt": {"num_virtual_tokens": 4}}
BATCH, SEQ = 4, 32


def applied(method, precision):
    from bench import registry
    from bench.methods.base import MethodContext
    from bench.models.loading import load_model
    from bench.models.precision import cast_frozen, precision_policy
    from bench.options import parse_options

    policy = precision_policy(precision, "cpu", True)
    cls = registry.load_method(method)
    model = load_model("tiny-llama", "causal_lm", None, 0, dtype=policy.storage_dtype(cls.trains_base)).model
    cfg, _ = parse_options(cls.config_cls, OPTIONS[method], "method")
    ctx = MethodContext(model_kind="causal_lm", precision=precision, steps=2, seed=0, load_method=registry.load_method)
    model = cls(cfg, ctx).apply(model)
    cast_frozen(model, policy)
    return model.train(), policy


def saved_bytes(model, autocast):
    import torch

    storages = {}

    def pack(t):
        s = t.untyped_storage()
        storages[(s.data_ptr(), s.nbytes())] = s.nbytes()
        return t

    ids = torch.randint(4, 200, (BATCH, SEQ))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return sum(storages.values())


def estimate(model, method, precision, policy):
    from bench.plan.memory import estimate_model
    from bench.suite.spec import RunSpec

    spec = RunSpec(
        suite="t",
        model="tiny-llama",
        task="random-lm",
        method=method,
        precision=precision,
        grad_accum=1,
        batch_size=BATCH,
        seq_len=SEQ,
        method_options=OPTIONS[method],
    )
    return estimate_model(model, spec, policy.compute_dtype, True)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", list(OPTIONS))
def test_weights_gradients_and_optimizer_are_exact(method, precision):
    import torch

    model, policy = applied(method, precision)
    est = estimate(model, method, precision, policy)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.randint(4, 200, (BATCH, SEQ))
    model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in trainable)
    state = sum(v.numel() * v.element_size() for s in opt.state.values() for k, v in s.items() if k != "step")
    assert est.weights_mib * 2**20 == weights
    assert est.gradients_mib * 2**20 == grads
    assert est.optimizer_mib * 2**20 == state


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["full", "lora"])
def test_activations_are_within_15_percent_of_what_autograd_saves(method, precision):
    from bench.cell.train import autocast_for

    model, policy = applied(method, precision)
    est = estimate(model, method, precision, policy)
    assert est.activations_mib * 2**20 == pytest.approx(saved_bytes(model, autocast_for(policy, "cpu")), rel=0.15)
