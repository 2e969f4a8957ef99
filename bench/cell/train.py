"""The timed training loop: the plain loop a user would write (torch autocast, AdamW, fused on CUDA, the model's
own causal-LM loss), token-weighted gradient accumulation, warm-up steps excluded from timing, and a device
synchronize before every clock read.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from bench.errors import Diverged, Unsupported
from bench.models.precision import PrecisionPolicy, input_casting_off
from bench.tasks.base import Step
from bench.trackers.phases import Phase


@dataclass
class TrainStats:
    losses: list[float] = field(default_factory=list)  # one per optimizer step, effective-batch mean
    step_times_s: list[float] = field(default_factory=list)  # timed (post-warm-up) steps only
    timed_tokens: int = 0  # real (non-padding) tokens processed in timed steps
    timed_padded_tokens: int = 0  # tokens including padding (what the device computed on)
    timed_samples: int = 0
    skipped_steps: int = 0  # optimizer steps the fp16 scaler skipped for inf/nan gradients
    all_steps_s: float = 0.0  # every step's time, warm-up included
    shapes: set[tuple[int, ...]] = field(default_factory=set)  # input shapes seen (fixed-shape data: one per micro)
    counted_flops: float | None = None  # torch's FlopCounterMode over the first (warm-up) step
    counted_tokens: int = 0  # real tokens of that step
    all_tokens: int = 0  # real tokens of every step, warm-up included
    warmup_times_s: list[float] = field(default_factory=list)  # the warm-up steps (a compiled cell compiles here)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def autocast_for(policy: PrecisionPolicy, device: str) -> Any:
    """A fresh autocast context factory for the policy (a no-op for fp32)."""
    import torch

    if policy.mixed_precision == "no":
        return nullcontext
    dtype = torch.float16 if policy.mixed_precision == "fp16" else torch.bfloat16
    return lambda: torch.autocast(device_type=device, dtype=dtype)


def make_optimizer(params: list[Any], lr: float, device: str) -> Any:
    import torch

    fused = device == "cuda" and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=fused or None)


def train(
    model: Any,
    task: Any,
    spec: Any,
    method: Any,
    policy: PrecisionPolicy,
    device: str,
    marks: Any,
    after_step: Callable[[int, TrainStats], None] | None = None,
    ranks: Any = None,
) -> TrainStats:
    """`spec.steps` optimizer steps of `spec.batch_size` examples split into `spec.grad_accum` micro-batches.

    Each micro-batch contributes loss_sum / (targets in the whole effective batch), so the gradient equals the one
    of the full batch whatever the split (and whatever the ranks: `ranks` of a distributed cell, each taking an
    equal share). `marks.start/end(Phase.TRAIN_TIMED)` bracket the timed steps."""
    import torch

    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], spec.lr, device)
    scaler = torch.amp.GradScaler(device) if policy.mixed_precision == "fp16" else None
    autocast = autocast_for(policy, device)
    model.train()
    stats = TrainStats()
    batches = task.train_batches(spec.batch_size)
    with input_casting_off(model, policy.mixed_precision != "no"):
        for step in range(spec.steps):
            micro, counts, total = step_batches(task, next(batches), spec, method.prepends_tokens, ranks)
            if total == 0:  # a loss over no targets is 0 and trains nothing: no result to publish
                raise Unsupported(
                    f"the step-{step} batch has no training targets (seq_len {spec.seq_len}); raise seq_len"
                )
            timed = step >= spec.warmup_steps
            if timed and step == spec.warmup_steps:
                marks.start(Phase.TRAIN_TIMED)
                if ranks is not None:
                    ranks.comm.timed_start()
            counter = flop_counter() if step == 0 and not timed and not spec.compile else None
            sync(device)
            t0 = time.perf_counter()
            with counter or nullcontext():
                step_loss = forward_backward(model, task, method, micro, counts, total, autocast, scaler, ranks, device)
                _optimizer_step(optimizer, scaler, stats)
                method.after_optimizer_step(model, step)  # part of the method's cost, so inside the timed step
                optimizer.zero_grad(set_to_none=True)
            sync(device)
            if counter is not None:
                stats.counted_flops, stats.counted_tokens = float(counter.get_total_flops()), real_tokens(micro)
            elapsed = time.perf_counter() - t0
            if ranks is not None:  # the effective batch's loss, for the curve (outside the step's clock)
                from bench.cell.distributed import reduce_loss

                step_loss = reduce_loss(step_loss)
            _account(stats, step_loss, micro, timed, elapsed)
            if math.isnan(stats.losses[-1]):  # _account stores every non-finite loss as nan
                raise Diverged(step, float(step_loss), stats.losses)
            if after_step is not None:  # outside the step's clock (a score-curve evaluation pauses the phases)
                after_step(step, stats)
    if spec.steps > spec.warmup_steps:
        marks.end(Phase.TRAIN_TIMED)
    return stats


def forward_backward(
    model: Any,
    task: Any,
    method: Any,
    micro: list[Any],
    counts: list[int],
    total: int,
    autocast: Any,
    scaler: Any,
    ranks: Any,
    device: str,
) -> Any:
    """Forward and backward of this process's micro-batches; their summed loss (detached)."""
    import torch

    world = ranks.world if ranks is not None else 1  # DDP and FSDP average gradients over ranks: scaled back
    step_loss = torch.zeros((), device=device)
    for i, (batch, count) in enumerate(zip(micro, counts)):
        on_device = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        # forward and backward inside: DDP decides in its forward whether the backward all-reduces
        with grad_sync(model, ranks, i == len(micro) - 1):
            with autocast():
                loss = method.loss(model, task, Step(on_device, total, count))
            scaled = loss * world if world > 1 else loss
            (scaler.scale(scaled) if scaler else scaled).backward()
        step_loss += loss.detach()
    return step_loss


def step_batches(
    task: Any, examples: list[Any], spec: Any, prepends: bool, ranks: Any
) -> tuple[list[Any], list[int], int]:
    """This process's micro-batches of one effective batch, their target counts and the effective batch's total.
    Every rank draws the same batch and takes its contiguous share of `grad_accum` micro-batches, so N ranks
    train what one process would."""
    world, rank = (ranks.world, ranks.rank) if ranks is not None else (1, 0)
    every = task.micro_batches(examples, spec.micro_batch // world)
    counts = [task.target_count(b, prepends) for b in every]
    mine = slice(rank * spec.grad_accum, (rank + 1) * spec.grad_accum)
    return every[mine], counts[mine], sum(counts)


def grad_sync(model: Any, ranks: Any, last: bool) -> Any:
    if ranks is None:
        return nullcontext()
    from bench.cell.distributed import grad_sync as sync_on_last

    return sync_on_last(model, last)


def flop_counter() -> Any:
    """torch's own FLOP counter (matmuls, convolutions, attention kernels; forward, backward and any recompute)."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False)


def real_tokens(micro: list[dict[str, Any]]) -> int:
    total = 0
    for b in micro:
        mask = b.get("attention_mask")
        total += int(mask.sum()) if mask is not None else b["input_ids"].numel()
    return total


def _optimizer_step(optimizer: Any, scaler: Any, stats: TrainStats) -> None:
    if scaler is None:
        optimizer.step()
        return
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    if scaler.get_scale() < scale:  # the scaler lowers its scale exactly when it skipped the step
        stats.skipped_steps += 1


def _account(stats: TrainStats, step_loss: Any, micro: list[dict[str, Any]], timed: bool, elapsed: float) -> None:
    value = float(step_loss)
    stats.all_steps_s += elapsed
    stats.all_tokens += real_tokens(micro)
    stats.losses.append(value if math.isfinite(value) else float("nan"))
    for b in micro:
        stats.shapes.add(tuple(b["input_ids"].shape))
    if not timed:
        stats.warmup_times_s.append(elapsed)
    if timed:
        stats.step_times_s.append(elapsed)
        stats.timed_tokens += real_tokens(micro)
        for b in micro:
            stats.timed_padded_tokens += b["input_ids"].numel()
            stats.timed_samples += b["input_ids"].shape[0]


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


THROUGHPUT_KEYS = (
    "tokens_per_s",
    "padded_tokens_per_s",
    "samples_per_s",
    "step_time_p50_s",
    "step_time_p90_s",
    "step_time_mean_s",
    "step_time_spread",
)


def throughput_metrics(stats: TrainStats) -> tuple[dict[str, Any], dict[str, str]]:
    """Throughput and step-time percentiles from timed steps; missing reasons where there were none."""
    total = sum(stats.step_times_s)
    base = {
        "timed_steps": len(stats.step_times_s),
        "timed_tokens": stats.timed_tokens,
        "timed_padded_tokens": stats.timed_padded_tokens,
        "skipped_steps": stats.skipped_steps,
        "final_loss": stats.losses[-1] if stats.losses else None,
        "distinct_batch_shapes": len(stats.shapes),
    }
    if not stats.step_times_s or total <= 0:
        reason = "no timed steps: steps <= warmup_steps"
        return {**base, **{k: None for k in THROUGHPUT_KEYS}}, {k: reason for k in THROUGHPUT_KEYS}
    p50, p90 = percentile(stats.step_times_s, 50), percentile(stats.step_times_s, 90)
    return {
        **base,
        "tokens_per_s": stats.timed_tokens / total,
        "padded_tokens_per_s": stats.timed_padded_tokens / total,
        "samples_per_s": stats.timed_samples / total,
        "step_time_p50_s": p50,
        "step_time_p90_s": p90,
        "step_time_mean_s": total / len(stats.step_times_s),
        "step_time_spread": p90 / max(p50, 1e-12),
    }, {}
