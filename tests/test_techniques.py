"""Distillation, pruning, low-rank factorization and gradient checkpointing on tiny models."""

import pytest
import torch

from conftest import run_cell_inproc
from methods_helper import build, train_steps

SMALL = {"task_options": {"n_train": 32, "n_eval": 8}, "steps": 3}


def test_distill_keeps_the_teacher_bit_identical_and_records_it(tmp_path):
    a = build("tiny-bert", "distill", {"teacher": "tiny-bert", "student_layers": 1, "alpha": 0.7})
    teacher = a.method.teacher
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    train_steps(a)
    assert all(torch.equal(before[n], p) for n, p in teacher.named_parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    m = a.method.metrics(1.0)
    assert m["teacher_params"] == sum(p.numel() for p in teacher.parameters()) and m["student_layers"] == 1
    assert 0 < m["teacher_forward_s"] and m["teacher_memory_mib"] > 0
    assert len(a.model.bert.encoder.layer) == 1 and a.model.config.num_hidden_layers == 1


@pytest.mark.parametrize("model, task", [("tiny-bert", "toy-cls"), ("tiny-llama", "random-lm")])
def test_distill_cells_run_for_classification_and_causal_lm(tmp_path, model, task):
    options = {"teacher": model, "student_layers": 1, "student_method": "lora", "student_method_options": {"r": 2}}
    res = run_cell_inproc(tmp_path, model=model, task=task, method="distill", method_options=options, **SMALL)
    assert res["status"] == "success", res.get("error")
    m = res["metrics"]
    assert m["teacher_params"] > 0 and 0 < m["teacher_forward_share"] < 1 and m["student_layers"] == 1
    assert m["trainable_params"] < m["total_params"]  # a LoRA student: only its adapters train


def test_distill_without_a_teacher_is_the_control(tmp_path):
    res = run_cell_inproc(
        tmp_path, model="tiny-bert", method="distill", method_options={"alpha": 0.0, "student_layers": 1}, **SMALL
    )
    assert res["status"] == "success", res.get("error")
    assert res["metrics"]["teacher_params"] == 0 and res["metrics"]["teacher_forward_s"] == 0


def test_magnitude_pruned_weights_stay_zero_and_sparsity_counts_them():
    from bench.methods.structure import block_linears

    a = build("tiny-llama", "prune", {"sparsity": 0.5})
    zeros = {n: (m.weight == 0) for n, m in block_linears(a.model)}
    train_steps(a)
    total = sum(z.numel() for z in zeros.values())
    still = sum(int((m.weight[zeros[n]] == 0).all()) for n, m in block_linears(a.model))
    assert still == len(zeros)  # every pruned weight is still exactly zero after training
    counted = sum(int((m.weight == 0).sum()) for _, m in block_linears(a.model)) / total
    assert a.method.metrics(1.0)["prune_sparsity"] == pytest.approx(counted) and counted >= 0.5
    changed = any(not torch.equal(m.weight, m.weight * 0) for _, m in block_linears(a.model))
    assert changed


@pytest.mark.parametrize(
    "model, structure",
    [("tiny-llama", "channels"), ("tiny-bert", "channels"), ("tiny-llama", "heads"), ("tiny-bert", "heads")],
)
def test_structured_pruning_shrinks_the_layers_and_still_trains(model, structure):
    dense = sum(p.numel() * p.element_size() for p in build(model, "full").model.parameters())
    a = build(model, "prune", {"sparsity": 0.5, "structure": structure})
    m = a.method.metrics(1.0)
    assert m["prune_sparsity"] == pytest.approx(0.5) and m["model_dense_bytes"] < dense  # really smaller layers
    train_steps(a)


def test_prune_records_scores_and_sizes(tmp_path):
    res = run_cell_inproc(tmp_path, method="prune", method_options={"sparsity": 0.5, "then": "lora"}, **SMALL)
    assert res["status"] == "success", res.get("error")
    m = res["metrics"]
    assert m["score_unpruned"] is not None and m["score_pruned"] is not None
    assert m["model_sparse_bytes"] < m["model_dense_bytes"] and m["nonzero_params"] < m["total_params"]


def test_lowrank_factor_shapes_and_counts_follow_the_formula():
    from bench.methods.structure import block_linears

    dims = [(m.in_features, m.out_features) for _, m in block_linears(build("tiny-llama", "full").model)]
    a = build("tiny-llama", "lowrank", {"r": 4})
    trainable = sum(p.numel() for p in a.model.parameters() if p.requires_grad)
    assert trainable == sum(4 * (d_in + d_out) for d_in, d_out in dims)
    down, up = a.model.model.layers[0].mlp.down_proj
    assert down.weight.shape == (4, 128) and up.weight.shape == (64, 4)
    assert a.method.metrics(1.0)["lowrank_compression"] == pytest.approx(
        sum(4 * (i + o) for i, o in dims) / sum(i * o for i, o in dims)
    )


def test_lowrank_at_full_rank_reproduces_the_model():
    from bench.methods.lowrank import factorize

    layer = torch.nn.Linear(16, 12)
    x = torch.randn(3, 16)
    torch.testing.assert_close(factorize(layer, 12, None)(x), layer(x), atol=1e-5, rtol=1e-4)
    assert factorize(layer, None, 0.5)[0].out_features < 12


def saved_bytes(model, task, batch_size=8):
    """Bytes of the tensors autograd saves for backward in one forward of the training batch."""
    total = []

    def pack(t):
        total.append(t.numel() * t.element_size())
        return t

    batch = task.collate(task.train[:batch_size])
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = task.loss(model, batch, task.target_count(batch))
    loss.backward()
    return sum(total)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_grad_ckpt_saves_less_for_backward_but_not_the_loss_curve(tmp_path, method):
    from bench.cell.steps import enable_grad_ckpt

    plain = build("tiny-llama", method)
    ckpt = build("tiny-llama", method)
    enable_grad_ckpt(ckpt.model, ckpt.method)
    assert saved_bytes(ckpt.model, ckpt.task) < saved_bytes(plain.model, plain.task)
    curves = {}
    for gc in (False, True):
        res = run_cell_inproc(
            tmp_path / str(gc), task="random-lm", method=method, grad_ckpt=gc, steps=4, save_checkpoint=False
        )
        assert res["status"] == "success", res.get("error")
        curves[gc] = res["loss_curve"]
    torch.testing.assert_close(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=1e-5, atol=0)


def test_grad_ckpt_is_unsupported_where_the_model_cannot(tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.LlamaForCausalLM, "supports_gradient_checkpointing", False)
    res = run_cell_inproc(tmp_path, task="random-lm", method="lora", grad_ckpt=True, steps=2)
    assert res["status"] == "unsupported" and "gradient checkpointing" in res["error"]["message"]


def test_adalora_regulariser_counts_once_per_step_whatever_the_split(tmp_path):
    curves = {}
    for ga in (1, 2):
        res = run_cell_inproc(
            tmp_path / str(ga), model="tiny-bert", method="adalora", grad_accum=ga, steps=4, save_checkpoint=False
        )
        assert res["status"] == "success", res.get("error")
        curves[ga] = res["loss_curve"]
    torch.testing.assert_close(torch.tensor(curves[2]), torch.tensor(curves[1]), rtol=1e-4, atol=0)
    from bench.methods.peft_methods import orthogonality_penalty

    a = build("tiny-bert", "adalora")
    assert float(orthogonality_penalty(a.model)) > 0


def test_the_teacher_clock_reads_cuda_events_once_and_never_syncs_inside_a_step(monkeypatch):
    import torch

    from bench.methods.distill import SpanClock

    calls = []

    class Event:  # torch.cuda.Event's timing surface, on a machine without CUDA
        def __init__(self, enable_timing):
            assert enable_timing
            self.at = None

        def record(self):
            calls.append("record")
            self.at = len(calls)

        def synchronize(self):
            calls.append("event sync")

        def elapsed_time(self, end):
            return 1000.0 * (end.at - self.at)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: calls.append("device sync"))
    clock = SpanClock()
    for _ in range(3):
        with clock.span(cuda=True):
            calls.append("teacher forward")
    assert "device sync" not in calls and "event sync" not in calls  # nothing waits inside the steps
    assert clock.total_s() == 3 * 2.0 and calls.count("event sync") == 1  # read once, at the end
    assert clock.total_s() == 6.0 and "device sync" not in calls
