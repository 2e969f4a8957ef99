"""The plain training loop a user would write, as the reference of `peft-bench selfcheck`.

It imports nothing from the harness: torch, transformers and peft only. Fixed-shape random batches on the device,
`model(input_ids=ids, labels=ids).loss`, autocast in the half type, AdamW (fused on CUDA), synchronize before every
clock read. Frozen base weights are stored in the half type and trained weights in fp32, as the harness's
precision table says (full fine-tuning keeps fp32 weights under autocast).

Usage: python bench/selfcheck/bareloop.py '{"config": {...}, "method": "lora", ...}'  -> one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys
import time


def build(job: dict) -> tuple[object, list]:
    import torch
    import transformers

    device, half = job["device"], {"bf16": torch.bfloat16, "fp16": torch.float16}.get(job["precision"])
    torch.manual_seed(job.get("seed", 0))
    cfg = transformers.AutoConfig.for_model(**job["config"])
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(
            cfg, dtype=torch.float32 if job["method"] == "full" else half or torch.float32
        )
    if job["method"] == "full":
        return model, list(model.parameters())
    import peft

    if job["method"] == "lora":
        pcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=job["r"], lora_alpha=job["alpha"], target_modules="all-linear")
    else:
        pcfg = peft.IA3Config(task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, pcfg)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model, [p for p in model.parameters() if p.requires_grad]


def run(job: dict) -> dict:
    import torch

    device = job["device"]
    model, params = build(job)
    vocab = job["config"]["vocab_size"]
    batches = [torch.randint(4, vocab, (job["batch_size"], job["seq_len"]), device=device) for _ in range(4)]
    opt = torch.optim.AdamW(params, lr=job["lr"], weight_decay=0.0, fused=device == "cuda" or None)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(job["precision"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    model.train()
    if half is not None:  # peft's adapter-input casts off under autocast, as the harness does (only where a layer
        # has the switch: peft's own helper fails on IA3's layers)
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = False
    return _loop(job, model, batches, opt, half, sync)


def _loop(job: dict, model: object, batches: list, opt: object, half: object, sync: object) -> dict:
    import torch

    device = job["device"]
    times, marks = [], {}
    for step in range(job["steps"]):
        ids = batches[step % len(batches)]
        sync()
        if step == job["warmup_steps"]:
            marks["train_timed_start_unix"] = time.time()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=half or torch.float32, enabled=half is not None):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if step >= job["warmup_steps"]:
            times.append(time.perf_counter() - t0)
    marks["train_timed_end_unix"] = time.time()
    out = {
        "step_times_s": times,
        "tokens_per_step": job["batch_size"] * job["seq_len"],
        "final_loss": float(loss.detach()),
        **marks,
    }
    if device == "cuda":
        out["torch_peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        out["torch_peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
