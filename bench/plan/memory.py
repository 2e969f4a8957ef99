"""Will it fit? A per-cell estimate of peak training memory (what torch allocates; the CUDA context comes on top),
split into weights, gradients, optimizer state and activations.

Weights, gradients and optimizer state are counted exactly from the model as the method leaves it (dtypes
included): before a run on the meta device (the model built from its config, the method applied there), in a run
from the real model. Activations are counted too: one forward over fake tensors with autograd's saved-tensor hooks
(bench/plan/saved.py), plus what the loss's backward holds on top (the logits' gradient, `transient`). Where a
model cannot run on fake tensors (quantized bitsandbytes layers, a method holding real tensors outside its
parameters) a formula per transformer block stands in, and the estimate says so (`activations_basis`):

- a block saves, per token, in the compute dtype: its input and norm outputs (4 h), q / k / v / attention output
  (2 h + 2 h_kv), the MLP's inputs and intermediates (a gated MLP 4 I, a plain one 2 I) and the residual (h); norms
  in fp32 keep an fp32 copy of their input (2 x 4 h bytes). With gradient checkpointing only the block input stays
  (h per token per block) plus one block's activations during its recomputation.
- the logits: b x s x V in the compute dtype and their fp32 upcast in the loss; under half-precision autocast the
  half copy of every fp32 matmul weight (2 bytes per such weight).

AdamW keeps two fp32 moments per trainable parameter; gradients are fp32 for the (fp32) trainable weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from bench.errors import Unsupported
from bench.suite.spec import RunSpec

MIB = 2**20
NF4_BYTES = (
    0.5 + 1 / 64 + 4 / (64 * 256)
)  # per weight: 4 bits + 8-bit absmax per 64 + fp32 per 256 absmax (double quant)
INT8_BYTES = 1.0  # per weight (+ one fp32 scale per output row, counted as the row's own parameter)
# bytes per *stored* element: bitsandbytes packs two 4-bit weights per uint8 (Params4bit); the meta stand-ins
# used before a run hold one element per weight
PACKED_BYTES = {"Params4bit": 2 * NF4_BYTES, "Meta4bit": NF4_BYTES, "Int8Params": INT8_BYTES, "MetaInt8": INT8_BYTES}


@dataclass
class MemoryEstimate:
    weights_mib: float
    gradients_mib: float
    optimizer_mib: float
    activations_mib: float  # saved for backward
    transient_mib: float = 0.0  # held by the loss's backward on top: the logits' gradient
    activations_basis: str = "counted"  # or "formula: why the count could not run"

    @property
    def total_mib(self) -> float:
        return self.weights_mib + self.gradients_mib + self.optimizer_mib + self.activations_mib + self.transient_mib

    def as_metrics(self) -> dict[str, float]:
        out = {f"estimate_{k}": v for k, v in asdict(self).items() if k != "activations_basis"}
        out["estimate_total_mib"] = self.total_mib
        return out


def parameter_bytes(model: Any) -> tuple[float, float, float]:
    """(weight bytes, gradient bytes, AdamW state bytes) of a model as the method leaves it."""
    weights = grads = optim = 0.0
    for p in model.parameters():
        per = PACKED_BYTES.get(type(p).__name__)
        weights += p.numel() * (per if per is not None else p.element_size())
        if p.requires_grad:
            grads += p.numel() * p.element_size()
            optim += 2 * p.numel() * 4
    return weights, grads, optim


def activation_bytes(
    config: Any, micro_batch: int, seq_len: int, compute_bytes: int, grad_ckpt: bool, causal: bool
) -> float:
    """Saved activations of a transformer's training step (formula in the module docstring)."""
    h = config.hidden_size
    heads = config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * (getattr(config, "head_dim", None) or h // heads)
    inter = getattr(config, "intermediate_size", 4 * h)
    gated = getattr(config, "hidden_act", "") in ("silu", "swiglu") or getattr(config, "model_type", "") in (
        "llama",
        "qwen2",
        "mistral",
        "gemma",
    )
    tokens = micro_batch * seq_len
    block = tokens * (compute_bytes * (7 * h + 2 * kv + (4 if gated else 2) * inter) + 2 * 4 * h)
    layers = config.num_hidden_layers
    saved = tokens * h * compute_bytes * layers + block if grad_ckpt else block * layers
    logits = tokens * config.vocab_size * (compute_bytes + 4) if causal else 0  # one label per sequence otherwise
    return saved + logits


def transient_bytes(logits: int, compute_bytes: int) -> float:
    """The loss's backward: the logits' gradient in fp32 (from the fp32 loss) and in the compute dtype."""
    return logits * (4 + compute_bytes)


def estimate_model(model: Any, spec: RunSpec, compute_dtype: str, causal: bool) -> MemoryEstimate:
    """The estimate for a model the method has been applied to (real or on the meta device); for a distributed
    cell, per rank: its share of each micro-batch, and under FSDP its shard of weights, gradients and optimizer."""
    weights, grads, optim = parameter_bytes(model)
    shards = spec.world_size if spec.distributed and spec.distributed["strategy"] == "fsdp" else 1
    acts, transient, basis = activations(model, spec, compute_dtype, causal)
    return MemoryEstimate(
        weights / MIB / shards, grads / MIB / shards, optim / MIB / shards, acts / MIB, transient / MIB, basis
    )


def activations(model: Any, spec: RunSpec, compute_dtype: str, causal: bool) -> tuple[float, float, str]:
    """(saved for backward, the loss backward's transient, basis) of one micro-batch: counted over fake tensors,
    or by the formula where the count cannot run (module docstring)."""
    import torch

    from bench.plan.saved import count_saved

    config = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    compute = 4 if compute_dtype == "float32" else 2
    micro = spec.micro_batch // spec.world_size
    half = None if compute == 4 else getattr(torch, compute_dtype)
    try:
        count = count_saved(model, micro, spec.seq_len, half, causal)
    except Exception as exc:
        why = f"formula: the fake-tensor count failed ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})"
        acts = activation_bytes(config, micro, spec.seq_len, compute, spec.grad_ckpt, causal)
        acts += autocast_weight_copies(model) if compute == 2 else 0
        logits = micro * spec.seq_len * config.vocab_size if causal else 0
        return acts, transient_bytes(logits, compute), why
    return float(count.saved(spec.grad_ckpt)), transient_bytes(count.logits if causal else 0, compute), "counted"


def autocast_weight_copies(model: Any) -> float:
    """Under half-precision autocast every fp32 matmul weight (full fine-tuning's master weights, adapter weights)
    is cast to the half type once per forward and that copy is kept for backward: 2 bytes per such weight."""
    import torch

    total = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.Linear) and weight is not None and weight.dtype == torch.float32:
            total += weight.numel()
    return 2.0 * total


class ConfigCache:
    """Model configs of a suite, each fetched once; after one hub id is unreachable the others are not tried
    (an offline hub costs half a minute of retries per attempt)."""

    def __init__(self) -> None:
        self.configs: dict[tuple, Any] = {}
        self.hub_down: str | None = None

    def get(self, spec: RunSpec, kind: str, num_labels: int | None) -> Any:
        import json

        from bench.models.loading import load_config
        from bench.models.sources import resolve_source

        key = (spec.model, json.dumps(spec.model_options, sort_keys=True), kind, num_labels)
        if key not in self.configs:
            source = resolve_source(spec.model, spec.model_options)
            if source.kind == "hub" and self.hub_down:
                self.configs[key] = ValueError(f"the hub was unreachable for an earlier model ({self.hub_down})")
            else:
                try:
                    self.configs[key] = load_config(source, kind, num_labels, spec.model_options)[0]
                except Exception as exc:
                    self.configs[key] = exc
                    if source.kind == "hub":
                        self.hub_down = f"{type(exc).__name__}: {str(exc)[:80]}"
        if isinstance(self.configs[key], Exception):
            raise self.configs[key]
        return self.configs[key]


def estimate_spec(spec: RunSpec, configs: ConfigCache | None = None) -> tuple[MemoryEstimate | None, str]:
    """Before any run: build the cell's model on the meta device, apply its method there, estimate. (None, why)
    where that cannot be done (a hub config offline, a method that needs data or a teacher to apply)."""
    try:
        return _estimate_on_meta(spec, configs or ConfigCache()), ""
    except Unsupported as exc:
        return None, " ".join(str(exc).split())[:200]
    except Exception as exc:
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def _estimate_on_meta(spec: RunSpec, configs: ConfigCache) -> MemoryEstimate:

    from bench import registry
    from bench.methods.base import MethodContext
    from bench.models.loading import auto_class, build_random
    from bench.models.precision import QUANTIZED, cast_frozen, label_policy
    from bench.options import parse_options

    task, method_cls = registry.load_task(spec.task), registry.load_method(spec.method)
    policy = label_policy(spec.precision) if spec.precision not in QUANTIZED else None
    cfg = configs.get(spec, task.model_kind, task.num_labels)
    storage = policy.storage_dtype(method_cls.trains_base) if policy else "bfloat16"
    model = build_random(auto_class(task.model_kind), cfg, "meta", storage, spec.seed)
    if spec.precision in QUANTIZED:
        _mark_quantized(model, spec.precision, task.model_kind)
    config, problems = parse_options(method_cls.config_cls, spec.method_options, "method")
    if problems:
        raise ValueError("; ".join(problems))
    ctx = MethodContext(
        model_kind=task.model_kind,
        precision=spec.precision,
        steps=spec.steps,
        seed=spec.seed,
        quantized=spec.precision in QUANTIZED,
        device="meta",
        num_labels=task.num_labels,
        evaluate=_needs("the task's data (it evaluates while applying)"),
        load_frozen_model=_needs("a teacher model loaded for real"),
        load_method=registry.load_method,
    )
    # new adapter tensors are made on the default device and follow their base layer to meta (small); a meta
    # default device would break methods that index into fresh buffers (BOFT's permutation matrices)
    model = method_cls(config, ctx).apply(model).to("meta")
    if policy is not None:
        cast_frozen(model, policy)
    compute = policy.compute_dtype if policy else "bfloat16"
    return estimate_model(model, spec, compute, task.model_kind == "causal_lm")


def _needs(what: str) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ValueError(f"this method needs {what}: no estimate before the run; its record has one")

    return refuse


def _mark_quantized(model: Any, precision: str, kind: str) -> None:
    """Count the quantized linears as bitsandbytes stores them (a meta model cannot hold bnb layers): their
    weights get the quantized byte size through a parameter subclass name; the rest is fp32 as
    prepare_model_for_kbit_training leaves it."""
    import torch

    skip = ("lm_head", "score", "classifier", "pre_classifier")
    cls = type("Meta4bit" if precision == "nf4" else "MetaInt8", (torch.nn.Parameter,), {})
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] not in skip:
            module.weight = cls(
                module.weight.data.to(torch.uint8 if precision == "nf4" else torch.int8), requires_grad=False
            )
    for p in model.parameters():
        if p.dtype.is_floating_point:
            p.data = p.data.float()
