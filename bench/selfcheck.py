"""`peft-bench selfcheck`: does the harness distort what it measures?

The same LoRA cell runs (a) as a bare training loop written plainly here, in its own process, and (b) through
the harness (spawn launcher, NVML sampling). Printed: tokens/s harness/bare (target >= 0.98) and, on GPU, the
harness's NVML peak of the cell process vs the bare run's torch max reserved + CUDA context (target within 2%).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.spec import RunSpec


def bare_loop(spec: RunSpec) -> dict[str, Any]:
    """Plain PyTorch + peft: same model, data, batch, optimizer and precision as the harness cell."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    from bench import registry
    from bench.models import CONFIGS

    device = "cuda" if spec.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"
    context_mib = None
    if device == "cuda":
        torch.zeros(1, device="cuda")
        context_mib = _process_nvml_mib() - torch.cuda.memory_reserved() / 2**20
    torch.manual_seed(spec.seed)
    model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**CONFIGS[spec.model]))
    task = registry.load("task", spec.task)
    task = task(task.config_cls(**spec.task_options), spec.seq_len, spec.seed)
    task.load(None, model.config)
    model = get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=spec.method_options.get("r", 8),
            lora_alpha=spec.method_options.get("alpha", 16),
            target_modules="all-linear",
        ),
    )
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.precision)
    if half is not None:
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(half)
    model.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.lr, weight_decay=0.0)
    batches = task.train_batches(spec.batch_size)
    tokens, elapsed = 0, 0.0
    model.train()
    for step in range(spec.steps):
        batch = task.collate(next(batches))
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        batch = {k: v.to(device) for k, v in batch.items()}  # the transfer is part of a step, as in the harness
        with torch.autocast(device, dtype=half or torch.float32, enabled=half is not None):
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"]
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if step >= spec.warmup_steps:
            elapsed += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
    out = {"tokens_per_s": tokens / elapsed, "device": device, "context_mib": context_mib}
    if device == "cuda":
        out["torch_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


def _process_nvml_mib() -> float:
    import os

    from bench import nvml

    backend, _ = nvml.open_backend()
    return backend.processes(0).get(os.getpid(), 0.0) if backend else 0.0


def selfcheck_spec(model: str, precision: str, steps: int) -> RunSpec:
    return RunSpec(
        suite="selfcheck",
        model=model,
        task="random-lm",
        method="lora",
        precision=precision,
        grad_accum=1,
        batch_size=8,
        steps=steps,
        warmup_steps=max(1, steps // 5),
        seq_len=512 if "1b" in model else 64,
        lr=1e-4,
        seed=0,
        timeout_s=600,
        task_options={"n_train": 256, "n_eval": 8},
        method_options={"r": 16, "alpha": 32},
        save_checkpoint=False,
    )


def run_bare(spec: RunSpec) -> dict[str, Any]:
    """The bare loop in a fresh process, so its memory figures are its own."""
    res = subprocess.run(
        [sys.executable, "-m", "bench.selfcheck", spec.to_json()], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def selfcheck(out: Path, model: str, precision: str, steps: int, rounds: int) -> dict[str, Any]:
    from bench import records
    from bench.runner import RunOptions, run_specs

    spec = selfcheck_spec(model, precision, steps)
    bare, harness, recs = [], [], []
    for i in range(rounds):  # interleaved, medians: machine drift hits both alike
        bare.append(run_bare(spec))
        run_specs([spec], RunOptions(out_dir=out / f"round{i}", force=True, launcher="spawn"), progress=lambda s: None)
        rec = records.read_records(out / f"round{i}").records[-1]
        if rec["status"] != "success":
            raise RuntimeError(f"harness cell {rec['status']}: {rec.get('error')}")
        recs.append(rec)
        harness.append(rec["metrics"]["tokens_per_s"])
    ratios = [h / b["tokens_per_s"] for h, b in zip(harness, bare)]
    result: dict[str, Any] = {
        "model": model,
        "precision": precision,
        "device": bare[0]["device"],
        "bare_tokens_per_s": [b["tokens_per_s"] for b in bare],
        "harness_tokens_per_s": harness,
        "ratio_median": statistics.median(ratios),
        "ratio_target": 0.98,
    }
    peak = recs[-1]["metrics"].get("peak_nvml_process_mib")
    if bare[0].get("torch_peak_reserved_mib") is not None and peak:
        independent = bare[-1]["torch_peak_reserved_mib"] + bare[-1]["context_mib"]
        result.update(
            nvml_peak_mib=peak,
            reserved_plus_context_mib=independent,
            nvml_diff_pct=100 * (peak - independent) / independent,
            nvml_target_pct=2.0,
        )
    else:
        result["nvml_diff_pct"] = None
        result["nvml_missing_reason"] = recs[-1]["missing_reason"].get("peak_nvml_process_mib", "no GPU")
    return result


def main(args: Any) -> int:
    model = args.model or ("llama-1b-shape" if _has_gpu() else "tiny-llama")
    res = selfcheck(Path(args.out), model, args.precision, args.steps, args.rounds)
    print(json.dumps(res, indent=2))
    ok = res["ratio_median"] >= res["ratio_target"]
    print(f"tokens/s harness/bare: {res['ratio_median']:.3f} (target >= 0.98) {'OK' if ok else 'BELOW TARGET'}")
    if res.get("nvml_diff_pct") is not None:
        print(f"NVML peak vs torch reserved + CUDA context: {res['nvml_diff_pct']:+.2f}% (target within 2%)")
    else:
        print(f"NVML check skipped: {res['nvml_missing_reason']}")
    return 0


def _has_gpu() -> bool:
    from bench import nvml

    return nvml.open_backend()[0] is not None


if __name__ == "__main__":
    print(json.dumps(bare_loop(RunSpec.from_json(sys.argv[1]))))
