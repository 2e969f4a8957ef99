"""In-process method application and training for the method-catalogue tests."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

TASK_FOR = {"tiny-llama": "random-lm", "tiny-bert": "toy-cls"}


@dataclass
class Applied:
    model: Any
    method: Any
    config: Any
    ctx: Any
    task: Any
    spec: Any


def build(model_name: str, method_name: str, options: dict | None = None, precision: str = "fp32") -> Applied:
    from bench import registry
    from bench.methods.base import MethodContext
    from bench.models.loading import load_model
    from bench.options import parse_options
    from bench.suite.spec import RunSpec
    from bench.tasks.base import TaskContext

    task_name = TASK_FOR[model_name]
    task_cls = registry.load("task", task_name)
    method_cls = registry.load("method", method_name)
    spec = RunSpec(
        suite="t",
        model=model_name,
        task=task_name,
        method=method_name,
        precision=precision,
        grad_accum=1,
        batch_size=4,
        steps=3,
        warmup_steps=1,
        seq_len=12,
        lr=1e-2,
        seed=0,
        timeout_s=60,
    )
    loaded = load_model(model_name, task_cls.model_kind, task_cls.num_labels, 0)
    model, tok = loaded.model, loaded.tokenizer
    task = task_cls(
        task_cls.config_cls(n_train=16, n_eval=8),
        TaskContext(seq_len=spec.seq_len, seed=0, tokenizer=tok, model_config=model.config),
    )
    task.load()
    cfg, problems = parse_options(method_cls.config_cls, options or {}, "method")
    assert not problems, problems

    def load_frozen(source, options=None):
        frozen = load_model(source, task_cls.model_kind, task_cls.num_labels, 0, options=options or {}).model
        return frozen.requires_grad_(False).eval()

    ctx = MethodContext(
        model_kind=task_cls.model_kind,
        precision=precision,
        steps=spec.steps,
        seed=0,
        tokenizer=tok,
        num_labels=task_cls.num_labels,
        evaluate=lambda m: task.evaluate(m.eval(), "cpu", 8, nullcontext)["score"],
        load_frozen_model=load_frozen,
        load_method=registry.load_method,
    )
    method = method_cls(cfg, ctx)
    model = method.apply(model)
    return Applied(model, method, cfg, ctx, task, spec)


def fresh_base(model_name: str) -> Any:
    from bench import registry
    from bench.models.loading import load_model

    task_cls = registry.load("task", TASK_FOR[model_name])
    return load_model(model_name, task_cls.model_kind, task_cls.num_labels, 0).model


def train_steps(a: Applied) -> None:
    from bench.cell.train import train
    from bench.models.precision import precision_policy
    from bench.trackers.phases import PhaseClock

    train(a.model, a.task, a.spec, a.method, precision_policy("fp32", "cpu"), "cpu", PhaseClock(None))


def logits(a_model: Any, task: Any) -> Any:
    import torch

    batch = task.collate(task.eval)
    a_model.eval()
    with torch.no_grad():
        return a_model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
