"""The timed training loop: accelerate for mixed precision, token-weighted gradient accumulation, warm-up
steps excluded from timing, and a device synchronize before every clock read."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from bench.precision import PrecisionPlan


@dataclass
class TrainStats:
    losses: list[float] = field(default_factory=list)  # one per optimizer step, effective-batch mean
    step_times_s: list[float] = field(default_factory=list)  # timed (post-warm-up) steps only
    timed_tokens: int = 0  # non-padding tokens processed in timed steps
    timed_samples: int = 0
    skipped_steps: int = 0  # optimizer steps the fp16 scaler skipped for inf/nan gradients


def make_accelerator(plan: PrecisionPlan, device: str) -> Any:
    from accelerate import Accelerator

    return Accelerator(mixed_precision=plan.mixed_precision, cpu=device == "cpu")


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def train(model: Any, task: Any, spec: Any, method: Any, accelerator: Any, device: str) -> TrainStats:
    """Run `spec.steps` optimizer steps of `spec.batch_size` examples split into `spec.grad_accum` micro-batches.

    Each micro-batch contributes loss_sum / (targets in the whole effective batch), so the gradient equals the
    one of the full batch whatever the split (padding-aware token averaging for causal LM).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=spec.lr, weight_decay=0.0)
    # accelerate's optimizer wrapper carries the fp16 gradient scaler; elsewhere it only adds per-step overhead
    # (~60 us measured on CPU), which tiny cells would show as lost throughput.
    scaled = accelerator.mixed_precision == "fp16"
    if scaled:
        optimizer = accelerator.prepare(optimizer)
    backward = accelerator.backward if scaled else torch.Tensor.backward
    autocast = accelerator.autocast if accelerator.mixed_precision != "no" else nullcontext
    model.train()
    stats = TrainStats()
    batches = task.train_batches(spec.batch_size)
    micro = spec.micro_batch
    for step in range(spec.steps):
        examples = next(batches)
        micro_batches = [task.collate(examples[i : i + micro]) for i in range(0, len(examples), micro)]
        total_targets = sum(task.target_count(b) for b in micro_batches)
        timed = step >= spec.warmup_steps
        _sync(device)
        t0 = time.perf_counter()
        step_loss = torch.zeros((), device=device)
        for batch in micro_batches:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                loss = task.loss_sum(logits, batch) / max(total_targets, 1)
            backward(loss)
            step_loss += loss.detach()
        optimizer.step()
        method.after_optimizer_step(model, step)  # part of the method's cost, so inside the timed step
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        elapsed = time.perf_counter() - t0
        if getattr(optimizer, "step_was_skipped", False):
            stats.skipped_steps += 1
        step_loss = float(step_loss)
        stats.losses.append(step_loss if math.isfinite(step_loss) else float("nan"))
        if timed:
            stats.step_times_s.append(elapsed)
            stats.timed_tokens += sum(int(b["attention_mask"].sum()) for b in micro_batches)
            stats.timed_samples += len(examples)
    return stats


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def throughput_metrics(stats: TrainStats) -> tuple[dict[str, Any], dict[str, str]]:
    """Throughput and step-time percentiles from timed steps; missing reasons where there were none."""
    total = sum(stats.step_times_s)
    if not stats.step_times_s or total <= 0:
        reason = "no timed steps: steps <= warmup_steps"
        keys = ("tokens_per_s", "samples_per_s", "step_time_p50_s", "step_time_p90_s", "step_time_mean_s")
        return {k: None for k in keys}, {k: reason for k in keys}
    return {
        "tokens_per_s": stats.timed_tokens / total,
        "samples_per_s": stats.timed_samples / total,
        "step_time_p50_s": percentile(stats.step_times_s, 50),
        "step_time_p90_s": percentile(stats.step_times_s, 90),
        "step_time_mean_s": total / len(stats.step_times_s),
    }, {}
