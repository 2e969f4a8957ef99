"""One isolated cell: RUN_DIR/spec.json in, RUN_DIR/result.json out. Knows nothing of the suite.

Run as `python -m bench.child RUN_DIR` (spawn launcher) or called as `run_cell(RUN_DIR)` in a forked
process (fork-server launcher). Exit code 0 whenever result.json was written; the status lives inside it.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.errors import Unsupported, looks_like_oom
from bench.spec import RunSpec

HEAVY_MODULES = ("peft", "bitsandbytes", "datasets", "evaluate")  # imported only by the cells that use them


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def launch_time(run_dir: Path) -> float | None:
    try:
        return json.loads((run_dir / "launch.json").read_text())["launch_time"]
    except (OSError, ValueError, KeyError):
        return None


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total); 4-bit packed weights count their logical elements, as peft does."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n = n * 2 * (p.element_size() if hasattr(p, "element_size") else 1)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_cell(run_dir: Path) -> dict[str, Any]:
    """Run the cell described by run_dir/spec.json and write run_dir/result.json; return the result."""
    t_main = time.time()
    spec = RunSpec.read(run_dir / "spec.json")
    launched = launch_time(run_dir)
    result: dict[str, Any] = {
        "status": "failed",
        "child_pid": os.getpid(),
        "metrics": {},
        "missing_reason": {},
        "timings": {"time_spawn_s": (t_main - launched) if launched else None},
    }
    try:
        _run(spec, run_dir, result)
        result["status"] = "success"
    except Unsupported as exc:
        result["status"] = "unsupported"
        result["error"] = {"type": "Unsupported", "message": str(exc)}
    except BaseException as exc:  # noqa: BLE001 - every failure must become a record
        text = f"{type(exc).__name__}: {exc}"
        result["status"] = "oom" if looks_like_oom(text) else "failed"
        result["error"] = {
            "type": type(exc).__name__,
            "message": str(exc)[:2000],
            "traceback": traceback.format_exc()[-8000:],
        }
        traceback.print_exc()
        if isinstance(exc, KeyboardInterrupt):
            result["status"] = "canceled"
    result["metrics"]["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["heavy_modules_loaded"] = sorted(m for m in HEAVY_MODULES if m in sys.modules)
    result["timings"]["time_child_total_s"] = time.time() - t_main
    write_json_atomic(run_dir / "result.json", result)
    return result


def _run(spec: RunSpec, run_dir: Path, result: dict[str, Any]) -> None:
    metrics, missing, timings = result["metrics"], result["missing_reason"], result["timings"]
    t = time.perf_counter()
    import torch  # noqa: F401 - import cost is measured as its own phase
    import transformers  # noqa: F401

    from bench import registry
    from bench.envinfo import base_env, device_env
    from bench.methods.base import MethodContext
    from bench.models import load_model, resolve_source
    from bench.options import parse_options
    from bench.precision import (
        cast_frozen,
        dtype_report,
        keep_quantized_weights_trainable_on_cpu,
        load_kwargs,
        plan_precision,
    )
    from bench.tasks.base import general_examples, lm_loss_eval
    from bench.train import make_accelerator, throughput_metrics, train

    timings["time_import_s"] = time.perf_counter() - t
    device = ("cuda" if torch.cuda.is_available() else "cpu") if spec.device == "auto" else spec.device
    result["env"] = {**base_env(), **device_env(device), "seed": spec.seed}
    torch.manual_seed(spec.seed)
    task_cls = registry.load("task", spec.task)
    method_cls = registry.load("method", spec.method)
    task_cfg, problems = parse_options(task_cls.config_cls, spec.task_options, "task")
    method_cfg, problems2 = parse_options(method_cls.config_cls, spec.method_options, "method")
    if problems or problems2:
        raise ValueError("; ".join(problems + problems2))
    plan = plan_precision(spec.precision, device)
    result["task_info"] = {
        "metric": task_cls.metric,
        "higher_is_better": task_cls.higher_is_better,
        "score_range": task_cls.score_range,
        "synthetic": task_cls.synthetic,
    }

    t = time.perf_counter()
    model, tokenizer = load_model(
        spec.model,
        task_cls.model_kind,
        task_cls.num_labels,
        spec.seed,
        load_kwargs(plan, device, task_cls.model_kind),
        spec.model_options,
    )
    if not plan.quantized:
        model.to(device)
    timings["time_model_load_s"] = time.perf_counter() - t
    result["model_info"] = {
        "class": type(model).__name__,
        "random_weights": resolve_source(spec.model).random_weights,
        "has_tokenizer": tokenizer is not None,
    }

    t = time.perf_counter()
    task = task_cls(task_cfg, spec.seq_len, spec.seed)
    if task_cls.needs_tokenizer and tokenizer is None:
        raise Unsupported(f"task {spec.task!r} needs a tokenizer; model {spec.model!r} has none")
    task.pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    task.load(tokenizer, model.config)
    timings["time_data_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ctx = MethodContext(task_cls.model_kind, spec.precision, spec.steps, spec.seed, plan.quantized, tokenizer)
    method = method_cls()
    model = method.apply(model, method_cfg, ctx)
    cast_frozen(model, plan)
    if not plan.quantized:
        model.to(device)
    elif device == "cpu":
        keep_quantized_weights_trainable_on_cpu(model)
    timings["time_method_apply_s"] = time.perf_counter() - t
    metrics["trainable_params"], metrics["total_params"] = count_params(model)
    metrics["micro_batch_size"] = spec.micro_batch
    metrics["trainable_pct"] = 100 * metrics["trainable_params"] / max(metrics["total_params"], 1)
    result["dtypes"] = dtype_report(model, plan)
    accelerator = make_accelerator(plan, device)

    t = time.perf_counter()
    model.eval()
    before = task.evaluate(model, device, spec.eval_batch_size, accelerator.autocast)
    eval_before = time.perf_counter() - t

    general, general_what = [], ""
    if task_cls.model_kind == "causal_lm":
        general, general_what = general_examples(task, tokenizer, model.config.vocab_size)
        if general:
            with model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext():
                metrics["general_loss_before"] = lm_loss_eval(
                    task, model, device, spec.eval_batch_size, accelerator.autocast, general
                )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    stats = train(model, task, spec, method, accelerator, device)
    timings["time_train_s"] = time.perf_counter() - t
    if device == "cuda":
        metrics["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        metrics["torch_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    else:
        for k in ("torch_peak_allocated_mib", "torch_peak_reserved_mib"):
            metrics[k] = None
            missing[k] = "no CUDA device: torch allocator peaks exist only on GPU"
    tp, tp_missing = throughput_metrics(stats)
    metrics.update(tp)
    missing.update(tp_missing)
    mfu(metrics, missing, result["env"])
    metrics.update(
        final_loss=stats.losses[-1] if stats.losses else None,
        skipped_steps=stats.skipped_steps,
        timed_steps=len(stats.step_times_s),
        timed_tokens=stats.timed_tokens,
    )
    result["loss_curve"] = stats.losses
    result["step_times_s"] = stats.step_times_s

    t = time.perf_counter()
    model.eval()
    after = task.evaluate(model, device, spec.eval_batch_size, accelerator.autocast)
    timings["time_eval_s"] = eval_before + time.perf_counter() - t
    metrics["score_before"], metrics["score_after"] = before["score"], after["score"]
    for key in before.keys() - {"score"}:
        metrics[f"{key}_before"], metrics[f"{key}_after"] = before[key], after.get(key)
    metrics["eval_time_s"] = timings["time_eval_s"]
    if general:
        metrics["general_loss_after"] = lm_loss_eval(
            task, model, device, spec.eval_batch_size, accelerator.autocast, general
        )
        metrics["forgetting_delta"] = metrics["general_loss_after"] - metrics["general_loss_before"]
        result["task_info"]["general_text"] = general_what
    else:
        reason = general_what or "forgetting is measured for causal-LM tasks only"
        for k in ("general_loss_before", "general_loss_after", "forgetting_delta"):
            metrics[k] = None
            missing[k] = reason

    t = time.perf_counter()
    if spec.save_checkpoint:
        ckpt = run_dir / "checkpoint"
        method.save(model, ckpt)
        metrics["checkpoint_bytes"] = dir_bytes(ckpt)
    else:
        metrics["checkpoint_bytes"] = None
        missing["checkpoint_bytes"] = "save_checkpoint is false for this suite"
    timings["time_save_s"] = time.perf_counter() - t


def mfu(metrics: dict[str, Any], missing: dict[str, str], env: dict[str, Any]) -> None:
    """Estimated model FLOPs utilisation: 6 x total params per trained token (forward + backward of a dense
    model, the usual convention, also for PEFT) x tokens/s / the GPU's dense bf16 peak."""
    from bench.envinfo import bf16_peak_flops

    metrics["model_flops_per_token"] = 6 * metrics["total_params"]
    peak = bf16_peak_flops(env.get("gpu_name"))
    if env.get("device") != "cuda":
        missing["mfu"] = "MFU is estimated on GPUs only"
    elif peak is None:
        missing["mfu"] = f"no bf16 peak in the table for {env.get('gpu_name')!r} (bench/envinfo.py)"
    elif metrics.get("tokens_per_s") is None:
        missing["mfu"] = "no timed steps"
    else:
        metrics["mfu"] = metrics["model_flops_per_token"] * metrics["tokens_per_s"] / peak
        return
    metrics["mfu"] = None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m bench.child RUN_DIR", file=sys.stderr)
        return 2
    run_cell(Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
