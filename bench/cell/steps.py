"""One step per phase of a cell (bench.trackers.phases.Phase says the cell's life), and the table that orders them
with the rule that skips a step and what a skipped step records. `bench.cell.run_cell` walks the table; each step
reads and fills the `Cell` it is given.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.cell.probe import apply_memory_limit, check_memory_limit, skip_eval_after
from bench.errors import Unsupported
from bench.results.cell_result import CellResult
from bench.results.rundir import RunDir
from bench.suite.spec import RunSpec
from bench.trackers.phases import Phase, PhaseClock

if TYPE_CHECKING:
    from bench.methods.base import Method, MethodConfig
    from bench.models.precision import PrecisionPolicy
    from bench.tasks.base import Task, TaskConfig


@dataclass(kw_only=True)
class Cell:
    spec: RunSpec
    run_dir: RunDir
    clock: PhaseClock
    result: CellResult
    device: str = "cpu"
    precision: PrecisionPolicy | None = None
    task_cls: type[Task] | None = None
    method_cls: type[Method] | None = None
    task_cfg: TaskConfig | None = None
    method_cfg: MethodConfig | None = None
    model: Any = None
    tokenizer: Any = None
    task: Task | None = None
    method: Method | None = None
    general: list[Any] = field(default_factory=list)  # general-text examples for the forgetting measurement
    general_what: str = ""
    allocator: Any = None  # bench.trackers.in_cell.TorchAllocatorTracker over the training phase
    num_labels: int | None = None  # the seq_cls head size, from the task's options (read once, in the load phase)
    curve: list[dict[str, Any]] = field(default_factory=list)  # score-curve points taken during training
    train_stats: Any = None  # bench.cell.train.TrainStats of the training phase
    lm_eval_cache: dict[str, Any] = field(default_factory=dict)  # lm-eval's task index, built once per cell
    ranks: Any = None  # bench.cell.distributed.Ranks of a distributed cell (None: one process)
    train_model: Any = None  # what training runs through: the model, or its DDP wrapper

    @property
    def metrics(self) -> dict[str, Any]:
        return self.result.metrics

    @property
    def missing(self) -> dict[str, str]:
        return self.result.missing_reason

    def autocast(self) -> Any:
        from bench.cell.train import autocast_for

        return autocast_for(self.precision, self.device)()

    def set_missing(self, keys: tuple[str, ...] | list[str], reason: str) -> None:
        self.result.set_missing(keys, reason)


def phase_import(c: Cell) -> None:
    """Every library the cell needs, so their import time lands here and nowhere else."""
    import torch
    import transformers  # noqa: F401

    from bench import registry
    from bench.env.facts import base_env, device_env
    from bench.models.precision import precision_policy
    from bench.options import parse_options

    spec = c.spec
    c.task_cls, c.method_cls = registry.load_task(spec.task), registry.load_method(spec.method)
    for module in cell_imports(spec):
        importlib.import_module(module)
    c.device = ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
    if spec.distributed:
        from bench.cell.distributed import init

        c.ranks = init(spec, c.device)
    plugins = {"method": registry.package_of("method", spec.method), "task": registry.package_of("task", spec.task)}
    c.result.env = {**base_env(), **device_env(c.device), "seed": spec.seed, "plugins": plugins}
    if c.ranks:
        c.result.env["distributed"] = c.ranks.describe()
    c.task_cfg, problems = parse_options(c.task_cls.config_cls, spec.task_options, "task")
    c.method_cfg, problems2 = parse_options(c.method_cls.config_cls, spec.method_options, "method")
    if problems or problems2:
        raise ValueError("; ".join(problems + problems2))
    c.result.task_info = {
        "metric": c.task_cls.metric,
        "higher_is_better": c.task_cls.higher_is_better,
        "score_range": c.task_cls.score_range,
        "synthetic": c.task_cls.synthetic,
    }
    c.result.metric_specs = {s.name: s.to_dict() for s in (*c.method_cls.metric_specs, *c.task_cls.metric_specs)}
    c.precision = precision_policy(spec.precision, c.device, spec.allow_emulated_precision)
    c.result.env["emulated_precision"] = c.precision.emulated
    c.result.heavy_modules_loaded = heavy_modules()


def cell_imports(spec: RunSpec) -> tuple[str, ...]:
    """The optional libraries a cell of this spec imports in its import phase: its method's and task's `requires`,
    bitsandbytes for a quantized base, lm-eval for standard scores. The fork server preloads their union over the
    cells it will fork (bench.execution.forkserver), so no cell pays for a library only another cell uses."""
    from bench import registry
    from bench.models.precision import QUANTIZED

    return (
        *registry.load_method(spec.method).requires,
        *registry.load_task(spec.task).requires,
        *(("bitsandbytes",) if spec.precision in QUANTIZED else ()),
        *(("datasets", "lm_eval", "lm_eval.models.huggingface", "lm_eval.tasks") if spec.lm_eval else ()),
    )


def heavy_modules() -> list[str]:
    """Which of the optional heavy libraries this process has imported."""
    import sys

    return sorted(m for m in ("peft", "bitsandbytes", "datasets", "evaluate") if m in sys.modules)


def phase_load(c: Cell) -> None:
    """The base model, built or loaded directly on the cell's device in the dtype the policy stores it in."""
    import torch

    from bench.models.loading import load_model
    from bench.models.precision import quantization_config

    torch.manual_seed(c.spec.seed)
    if c.device == "cuda":
        c.clock.sync = torch.cuda.synchronize
    c.num_labels = c.task_cls.labels_for(c.task_cfg)
    loaded = load_model(
        c.spec.model,
        c.task_cls.model_kind,
        c.num_labels,
        c.spec.seed,
        device=c.device,
        dtype=c.precision.storage_dtype(c.method_cls.trains_base),
        quant=quantization_config(c.precision, c.task_cls.model_kind),
        options=c.spec.model_options,
        attn=c.spec.attn,
    )
    c.model, c.tokenizer = loaded.model, loaded.tokenizer
    c.result.model_info = loaded.info
    check_limits(c)


def check_limits(c: Cell) -> None:
    """The loaded config against the cell (the suite was checked before the run where the config was readable)."""
    from bench.plan.checks import limit_findings

    problems, note = limit_findings(c.spec, c.task_cls.model_kind, c.model.config)
    if problems:
        raise Unsupported("; ".join(problems))
    if note:
        c.result.notes.append(note)


def phase_data(c: Cell) -> None:
    from bench.tasks.base import TaskContext
    from bench.tasks.batching import general_examples

    if c.task_cls.needs_tokenizer and c.tokenizer is None:
        raise Unsupported(f"task {c.spec.task!r} needs a tokenizer; model {c.spec.model!r} has none")
    ctx = TaskContext(
        seq_len=c.spec.seq_len,
        seed=c.spec.seed,
        tokenizer=c.tokenizer,
        model_config=c.model.config,
        pad_id=getattr(c.tokenizer, "pad_token_id", None) or 0,
    )
    c.task = c.task_cls(c.task_cfg, ctx)
    c.task.load()
    if info := c.task.info():
        c.result.task_info["data"] = info
    if c.task_cls.model_kind == "causal_lm":
        c.general, c.general_what = general_examples(c.task, c.tokenizer, c.model.config.vocab_size)


def phase_apply(c: Cell) -> None:
    from bench.models.params import count_params
    from bench.models.precision import cast_frozen, dtype_report, keep_quantized_weights_trainable_on_cpu
    from bench.plan.memory import estimate_model

    spec = c.spec
    c.method = c.method_cls(c.method_cfg, method_context(c))
    c.model = c.method.apply(c.model)
    cast_frozen(c.model, c.precision)
    if not c.precision.quantized:
        c.model.to(c.device)  # new adapter weights; the base is there already
    elif c.device == "cpu":
        keep_quantized_weights_trainable_on_cpu(c.model)
    causal = c.task_cls.model_kind == "causal_lm"  # counted before checkpointing and compile wrap the blocks
    estimate = estimate_model(c.model, spec, c.precision.compute_dtype, causal)
    c.metrics.update(estimate.as_metrics())
    if estimate.activations_basis != "counted":
        c.result.notes.append(f"estimate_activations_mib by {estimate.activations_basis}")
    if spec.grad_ckpt:
        enable_grad_ckpt(c.model, c.method)
    c.metrics["trainable_params"], c.metrics["total_params"] = count_params(c.model)
    c.metrics["trainable_pct"] = 100 * c.metrics["trainable_params"] / max(c.metrics["total_params"], 1)
    c.metrics["micro_batch_size"] = spec.micro_batch
    c.result.dtypes = dtype_report(c.model, c.precision)
    c.train_model = c.model
    if c.ranks:  # after counting: parameter counts are global, never per shard
        from bench.cell.distributed import wrap

        c.metrics["world_size"] = c.ranks.world
        c.train_model = wrap(c.model, c.ranks, c.precision.mixed_precision, c.device)
    if spec.compile:  # in place; a DDP cell's DDP module, as torch's DDP docs do (DDPOptimizer splits at buckets)
        from bench.cell.compiled import compile_model

        compile_model(c.train_model, spec.compile)


def method_context(c: Cell) -> Any:
    """What a method may use: the cell's facts, an evaluation of the task now, and loaders for frozen models
    (a teacher) and other methods (composition)."""
    from bench import registry
    from bench.methods.base import MethodContext
    from bench.models.loading import load_model

    def evaluate(model: Any) -> float:
        return task_scores(c, model)["score"]

    def load_frozen_model(source: str, options: dict[str, Any] | None = None) -> Any:
        kind, labels = c.task_cls.model_kind, c.num_labels
        dtype = c.precision.storage_dtype(False)
        model = load_model(source, kind, labels, c.spec.seed, device=c.device, dtype=dtype, options=options or {}).model
        model.requires_grad_(False)
        return model.eval()

    spec = c.spec
    return MethodContext(
        model_kind=c.task_cls.model_kind,
        precision=spec.precision,
        steps=spec.steps,
        seed=spec.seed,
        quantized=c.precision.quantized,
        tokenizer=c.tokenizer,
        device=c.device,
        grad_ckpt=spec.grad_ckpt,
        num_labels=c.num_labels,
        evaluate=evaluate,
        load_frozen_model=load_frozen_model,
        load_method=registry.load_method,
    )


def enable_grad_ckpt(model: Any, method: Any) -> None:
    """Non-reentrant activation checkpointing; inputs require grad so frozen-base adapters still get gradients."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise Unsupported(f"{type(base).__name__} does not support gradient checkpointing")
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if not method.trains_base and hasattr(base, "enable_input_require_grads"):
        base.enable_input_require_grads()


def task_scores(c: Cell, model: Any) -> dict[str, Any]:
    """The task's metrics of `model` now (eval mode, the cell's device, eval batch and autocast)."""
    model.eval()
    return c.task.evaluate(model, c.device, c.spec.eval_batch, c.autocast)


def score_into(c: Cell, when: str) -> None:
    """The task's metrics now, as `score_<when>` and `<metric>_<when>`; lm-eval's too where the suite asks."""
    scores = task_scores(c, c.model)
    c.metrics[f"score_{when}"] = scores["score"]
    for key in scores.keys() - {"score"}:
        c.metrics[f"{key}_{when}"] = scores[key]
    if c.spec.lm_eval:
        from bench.models.loading import hub_unreachable
        from bench.scoring.harness import lm_eval_scores

        dtype = None if c.precision.mixed_precision == "no" else c.precision.compute_dtype
        figures, kept = lm_eval_scores(
            c.model,
            c.tokenizer,
            c.spec.lm_eval,
            when,
            c.spec.eval_batch,
            dtype,
            c.method_cls.prepends_tokens,
            c.lm_eval_cache,
            hub_unreachable(),
        )
        c.metrics.update(figures)
        c.result.task_info.setdefault("lm_eval", {}).update(kept)


def general_loss(c: Cell) -> float:
    from bench.tasks.batching import lm_loss_eval

    return lm_loss_eval(c.task, c.model, c.device, c.spec.eval_batch, c.autocast, c.general)


def phase_eval_before(c: Cell) -> None:
    score_into(c, "before")
    if c.general:
        c.metrics["general_loss_before"] = general_loss(c)


def skip_eval_before(c: Cell) -> None:
    why = "eval_before is false for this suite (a pure cost cell)"
    c.set_missing(["score_before", "general_loss_before"], why)


def phase_train(c: Cell) -> None:
    from bench.cell.curve import curve_hook
    from bench.cell.measure import flops_per_token, utilisation
    from bench.cell.train import throughput_metrics, train

    hook = curve_hook(c, lambda: task_scores(c, c.model)["score"])
    if c.spec.compile:
        from bench.cell.compiled import compile_metrics, dynamo_counters

        before = dynamo_counters()
    stats = train(c.train_model, c.task, c.spec, c.method, c.precision, c.device, c.clock, hook, c.ranks)
    c.train_stats = stats
    check_memory_limit(c.result.task_info.get("memory_limit"))
    if c.spec.compile:
        c.metrics.update(compile_metrics(before, stats))
    if c.allocator is not None:
        c.allocator.stop()
        measured = c.allocator.attribute()
        c.metrics.update(measured.metrics)
        c.missing.update(measured.missing)
    if c.ranks:
        from bench.cell.distributed import gather_into

        gather_into(c, stats)
    tp, tp_missing = throughput_metrics(stats)
    c.metrics.update(tp)
    c.missing.update(tp_missing)
    flops, flops_missing = flops_per_token(c.metrics["total_params"], stats)
    c.metrics.update(flops)
    c.missing.update(flops_missing)
    if c.spec.compile:  # FlopCounterMode does not see inside compiled kernels, and counting would break the compile
        c.missing["hardware_flops_per_token"] = (
            "not counted for a compiled cell (FlopCounterMode cannot see its kernels)"
        )
    utilisation(c.metrics, c.missing, c.result.env, c.precision.compute_dtype)
    c.metrics.update(c.method.metrics(stats.all_steps_s))
    c.result.loss_curve = stats.losses
    c.result.step_times_s = stats.step_times_s


def clean_allocator(c: Cell) -> None:
    """Before the training phase is marked: the allocator tracker starts (eval's cached blocks released, torch's
    peaks reset), so neither the NVML window nor torch's peak of training starts holding them."""
    from bench.trackers.in_cell import TorchAllocatorTracker

    c.allocator = TorchAllocatorTracker(c.device)
    c.allocator.start()


def phase_eval_after(c: Cell) -> None:
    from bench.cell.curve import finish_curve

    score_into(c, "after")
    finish_curve(c)
    forgetting(c)


def forgetting(c: Cell) -> None:
    """General-text LM loss after minus before, both with the method attached as it is trained (so attaching an
    untrained prompt is not counted as forgetting)."""
    keys = ("general_loss_before", "general_loss_after", "forgetting_delta")
    if not c.general:
        c.set_missing(list(keys), c.general_what or "forgetting is measured for causal-LM tasks only")
        return
    c.metrics["general_loss_after"] = general_loss(c)
    c.result.task_info["general_text"] = c.general_what
    if c.metrics.get("general_loss_before") is None:
        c.set_missing(["forgetting_delta"], c.missing.get("general_loss_before", "no general loss before training"))
    else:
        c.metrics["forgetting_delta"] = c.metrics["general_loss_after"] - c.metrics["general_loss_before"]


CHECKPOINT_METRICS = ("checkpoint_bytes", "checkpoint_total_bytes")


def phase_save(c: Cell) -> None:
    """The method's checkpoint. A failing save is recorded in its own field; the measured cell stays a success."""
    from bench.cell.distributed import save_cell
    from bench.cell.measure import checkpoint_summary

    ckpt = c.run_dir.checkpoint
    try:
        info = save_cell(c, ckpt) if c.ranks else c.method.save(c.model, ckpt) or {}
    except Exception as exc:  # disk full, a method's save bug, ...
        why = f"checkpoint save failed: {type(exc).__name__}: {str(exc)[:300]}"
        c.result.checkpoint = {"error": why}
        c.set_missing(CHECKPOINT_METRICS, why)
        c.result.notes.append(f"{why}; a rerun retries this cell")
        return
    summary = checkpoint_summary(ckpt)
    c.result.checkpoint = {**info, **summary}
    c.metrics["checkpoint_bytes"] = summary["weight_bytes"]
    c.metrics["checkpoint_total_bytes"] = summary["total_bytes"]


def skip_save(c: Cell) -> None:
    c.set_missing(CHECKPOINT_METRICS, "save_checkpoint is false for this suite")


def phase_inference(c: Cell) -> None:
    from bench.cell.inference import run_inference
    from bench.suite.defaults import InferenceOptions

    if c.ranks and not c.ranks.leader:  # a DDP cell's generation is rank 0's, on its replica, the others done
        c.result.notes.append("inference is measured on rank 0 alone; this rank ended after saving")
        return
    opts = InferenceOptions(**c.spec.inference)
    metrics, missing = run_inference(c.model, c.task_cls.model_kind, opts, c.device, c.autocast, c.spec.seed)
    c.metrics.update(metrics)
    c.missing.update(missing)


def before_training(c: Cell) -> None:
    """A fit probe's memory limit (counted from the state training starts in), then a clean allocator."""
    if c.spec.memory_limit_mib:
        c.result.task_info["memory_limit"] = apply_memory_limit(c.spec.memory_limit_mib, c.device)
    clean_allocator(c)


def _always(spec: RunSpec) -> bool:
    return True


def _nothing(c: Cell) -> None:
    pass


@dataclass(frozen=True)
class Step:
    phase: Phase
    run: Callable[[Cell], None]
    enabled: Callable[[RunSpec], bool] = _always  # False: the step is skipped for this cell
    skipped: Callable[[Cell], None] = _nothing  # what a skipped step records (the reasons its figures are null)
    before: Callable[[Cell], None] = _nothing  # runs before the phase is marked (not part of its window)


STEPS: tuple[Step, ...] = (
    Step(Phase.IMPORT, phase_import),
    Step(Phase.LOAD, phase_load),
    Step(Phase.DATA, phase_data),
    Step(Phase.APPLY, phase_apply),
    Step(Phase.EVAL_BEFORE, phase_eval_before, lambda spec: spec.eval_before, skip_eval_before),
    Step(Phase.TRAIN, phase_train, before=before_training),
    Step(Phase.EVAL_AFTER, phase_eval_after, lambda spec: not spec.probe, skip_eval_after),
    Step(Phase.SAVE, phase_save, lambda spec: spec.save_checkpoint, skip_save),
    Step(Phase.INFERENCE, phase_inference, lambda spec: bool(spec.inference)),
)
