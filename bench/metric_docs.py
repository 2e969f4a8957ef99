"""Every metric a record may carry, with its meaning. The README's schema table is generated from this, and a
test fails when a cell writes a metric that is not documented here."""

from __future__ import annotations

import re

METRICS: dict[str, str] = {
    # parameters and storage
    "trainable_params": "parameters with requires_grad after the method is applied (4-bit weights unpacked)",
    "total_params": "all parameters of the model as trained (base + method)",
    "trainable_pct": "trainable_params / total_params x 100",
    "micro_batch_size": "examples per forward/backward (batch_size / grad_accum)",
    "checkpoint_bytes": "bytes of the weight files the method saved (.safetensors/.bin)",
    "checkpoint_total_bytes": "bytes of everything the method saved (configs and READMEs too)",
    # speed
    "tokens_per_s": "real (non-padding) tokens of the timed steps / their time",
    "padded_tokens_per_s": "tokens including padding (what the device computed) / time of the timed steps",
    "samples_per_s": "examples of the timed steps / their time",
    "step_time_p50_s": "median optimizer-step time (timed steps)",
    "step_time_p90_s": "90th percentile optimizer-step time",
    "step_time_mean_s": "mean optimizer-step time",
    "timed_steps": "optimizer steps after warm-up",
    "timed_tokens": "real tokens of the timed steps",
    "timed_padded_tokens": "tokens of the timed steps including padding",
    "distinct_batch_shapes": "input shapes the training steps had (fixed-shape data: 1)",
    "skipped_steps": "optimizer steps the fp16 gradient scaler skipped",
    "final_loss": "training loss of the last optimizer step",
    # utilisation
    "model_flops_per_token": "6 x total params (the usual MFU convention, the same for every method)",
    "hardware_flops_per_token": "FLOPs the method really computes per token (frozen weights get no weight gradients; "
    "attention and checkpointing recompute included)",
    "mfu": "model_flops_per_token x tokens/s / the GPU's dense peak for the compute dtype",
    "hfu": "hardware_flops_per_token x tokens/s / the same peak",
    # memory
    "train_peak_nvml_process_mib": "HEADLINE memory: peak NVML memory of the cell's process tree during training",
    "train_peak_nvml_mib": "peak NVML device memory during training (other processes included)",
    "peak_nvml_process_mib": "peak NVML memory of the cell's process tree over the whole cell",
    "peak_nvml_mib": "peak NVML device memory over the whole cell",
    "baseline_nvml_mib": "device memory in use just before the cell started (held by other processes)",
    "suite_baseline_nvml_mib": "device memory in use when the suite started (held by other processes)",
    "torch_peak_allocated_mib": "torch max allocated during the training phase",
    "torch_peak_reserved_mib": "torch max reserved during the training phase",
    "peak_rss_mib": "peak resident memory of the cell process over its life (its own count, ru_maxrss)",
    "peak_rss_tree_mib": "peak resident memory of the cell's process tree, sampled every ~20 ms",
    "train_peak_rss_mib": "HEADLINE memory on CPU: peak resident memory of the process tree during training",
    "rss_at_train_start_mib": "resident memory of the tree when training started (model, data, libraries)",
    "train_rss_growth_mib": "train_peak_rss_mib - rss_at_train_start_mib: what training itself added",
    "nvml_samples": "NVML samples taken during the cell",
    "nvml_errors": "NVML samples that failed (driver errors); the others still count",
    # estimate (bench/estimate.py): what torch will allocate, before the CUDA context
    "estimate_weights_mib": "estimated bytes of the weights as the method leaves them (quantized, half or fp32)",
    "estimate_gradients_mib": "estimated gradients (fp32, trainable parameters)",
    "estimate_optimizer_mib": "estimated AdamW state (two fp32 moments per trainable parameter)",
    "estimate_activations_mib": "estimated activations saved for backward, logits included",
    "estimate_total_mib": "the sum: the estimated peak torch allocation of training",
    # energy
    "energy_j": "NVML energy counter over the whole cell (load, evals and save included)",
    "train_energy_j": "NVML energy during the timed training steps",
    "energy_per_token_j": "train_energy_j / timed_tokens",
    # scores
    "score_before": "the task's headline metric before training (null when eval_before is false)",
    "score_after": "the task's headline metric after training",
    "eval_time_s": "time of the evaluations before and after training",
    "general_loss_before": "LM loss on general text before training, method attached (causal LM)",
    "general_loss_after": "the same after training",
    "forgetting_delta": "general_loss_after - general_loss_before",
    # inference phase (opt-in, bench/inference.py)
    "inference_tokens_per_s_base": "greedy generation tokens/s of the base model (adapter disabled)",
    "inference_tokens_per_s_adapter": "the same with the trained adapter, unmerged",
    "inference_tokens_per_s_merged": "the same with the adapter merged into the weights",
    "inference_ms_per_token_base": "generation latency per new token, base model",
    "inference_ms_per_token_adapter": "the same, unmerged adapter",
    "inference_ms_per_token_merged": "the same, merged adapter",
    "merge_logit_max_abs_diff": "largest |logit| difference between merged and unmerged on the inference prompt",
    # method-specific (distill, prune, lowrank)
    "teacher_params": "parameters of the frozen teacher (distill; 0 without one)",
    "teacher_memory_mib": "bytes of the teacher's weights and buffers on the device",
    "teacher_forward_s": "time of the teacher's forwards over all training steps",
    "teacher_forward_share": "teacher_forward_s / the training steps' time",
    "student_layers": "blocks kept in the student (distill with student_layers)",
    "prune_sparsity": "achieved share of zero (or removed) weights in the pruned layers",
    "nonzero_params": "parameters that are not zero after pruning and fine-tuning",
    "model_dense_bytes": "bytes of the pruned model's weights stored dense",
    "model_sparse_bytes": "bytes of the same stored sparse (non-zero values + a 1-bit mask, where smaller)",
    "score_unpruned": "the task's score before pruning",
    "score_pruned": "the task's score right after pruning, before fine-tuning",
    "lowrank_compression": "factor parameters / original parameters of the factorized layers",
    "lowrank_rank_mean": "mean rank kept per factorized layer",
    "score_factorized": "the task's score right after factorization, before fine-tuning",
}
# task metrics appear with the suffixes _before / _after (e.g. accuracy_after, macro_f1_before)
PATTERNS: dict[str, str] = {
    r"[a-z0-9_]+_(before|after)": "a task metric before / after training (accuracy, macro_f1, exact_match, ...)",
}


def documented(name: str) -> bool:
    return name in METRICS or any(re.fullmatch(p, name) for p in PATTERNS)
