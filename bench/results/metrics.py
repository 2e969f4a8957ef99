"""Every metric a record may carry: one `MetricSpec` per figure (name, unit, meaning, direction, report and plot
labels, the report table it belongs to). The README's schema table, the report's headers, columns and footnotes
and the plot's axis labels are generated from these rows. Plugins document their own figures with
`metric_specs` on their class; a record carries those rows, so a report needs no plugin installed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields
from typing import Any

HIGHER, LOWER = "higher", "lower"


@dataclass(frozen=True)
class MetricSpec:
    name: str
    doc: str  # what it is and how it is measured (README schema, report footnotes)
    unit: str = ""  # MiB, s, tokens/s, J, B, ... ("" for counts, scores and ratios)
    direction: str | None = None  # HIGHER / LOWER is better; None where it is not a goodness figure
    label: str = ""  # the report's column header ("" : the name)
    plot_label: str = ""  # an axis label ("" : the label with its unit)
    group: str = "core"  # the report table it appears in (core figures are in the main table)
    fmt: str = "num"  # num | int | bytes | pct

    @property
    def header(self) -> str:
        return self.label or self.name

    @property
    def axis(self) -> str:
        if self.plot_label:
            return self.plot_label
        return f"{self.header} ({self.unit})" if self.unit and self.unit not in self.header else self.header

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MetricSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _m(name: str, doc: str, unit: str = "", **kw: Any) -> MetricSpec:
    return MetricSpec(name, doc, unit, **kw)


CORE: tuple[MetricSpec, ...] = (
    # parameters and storage
    _m("trainable_params", "parameters with requires_grad after the method is applied (4-bit weights unpacked)",
       label="trainable", fmt="int", group="params"),
    _m("total_params", "all parameters of the model as trained (base + method)", label="total params", fmt="int",
       group="params"),
    _m("trainable_pct", "trainable_params / total_params x 100", "%", label="trainable %", fmt="pct",
       group="params"),
    _m("micro_batch_size", "examples per forward/backward (batch_size / grad_accum)", label="micro-batch",
       fmt="int", group="params"),
    _m("checkpoint_bytes", "bytes of the weight files the method saved (.safetensors/.bin)", "B",
       direction=LOWER, label="checkpoint", fmt="bytes", group="params"),
    _m("checkpoint_total_bytes", "bytes of everything the method saved (configs and READMEs too)", "B",
       label="checkpoint (all files)", fmt="bytes", group="params"),
    # speed
    _m("tokens_per_s", "real (non-padding) tokens of the timed steps / their time", "tokens/s", direction=HIGHER,
       label="tokens/s", plot_label="tokens/s (timed steps)", group="speed"),
    _m("padded_tokens_per_s", "tokens including padding (what the device computed) / time of the timed steps",
       "tokens/s", direction=HIGHER, label="padded tokens/s", group="speed"),
    _m("samples_per_s", "examples of the timed steps / their time", "samples/s", direction=HIGHER,
       label="samples/s", group="speed"),
    _m("step_time_p50_s", "median optimizer-step time (timed steps)", "s", direction=LOWER, label="step p50 s",
       group="speed"),
    _m("step_time_p90_s", "90th percentile optimizer-step time", "s", direction=LOWER, label="step p90 s",
       group="speed"),
    _m("step_time_mean_s", "mean optimizer-step time", "s", direction=LOWER, label="step mean s", group="speed"),
    _m("timed_steps", "optimizer steps after warm-up", label="timed steps", fmt="int", group="speed"),
    _m("timed_tokens", "real tokens of the timed steps", label="timed tokens", fmt="int", group="speed"),
    _m("timed_padded_tokens", "tokens of the timed steps including padding", label="timed padded tokens",
       fmt="int", group="speed"),
    _m("distinct_batch_shapes", "input shapes the training steps had (fixed-shape data: 1)", label="batch shapes",
       fmt="int", group="speed"),
    _m("skipped_steps", "optimizer steps the fp16 gradient scaler skipped", label="skipped steps", fmt="int",
       group="speed"),
    _m("final_loss", "training loss of the last optimizer step", direction=LOWER, label="final loss",
       group="speed"),
    # utilisation
    _m("model_flops_per_token", "6 x total params per token (Kaplan et al. 2020; PaLM's MFU convention without its "
       "attention term): embeddings counted, attention not, the same for every method", "FLOP",
       label="model FLOPs/token", group="utilisation"),
    _m("hardware_flops_per_token", "FLOPs the cell really computed per real token, counted by torch's "
       "FlopCounterMode over the first warm-up step (forward, backward, checkpointing recompute, attention)", "FLOP",
       label="hardware FLOPs/token", group="utilisation"),
    _m("mfu", "model_flops_per_token x tokens/s / the GPU's dense peak for the compute dtype", direction=HIGHER,
       label="MFU", group="utilisation"),
    _m("hfu", "hardware_flops_per_token x tokens/s / the same peak", direction=HIGHER, label="HFU",
       group="utilisation"),
    # torch.compile (the `compile` axis, bench/cell/compiled.py)
    _m("compile_warmup_s", "time of the warm-up steps of a compiled cell (the compile happens in them)", "s",
       label="warm-up s", group="compile"),
    _m("compile_overhead_s", "compile_warmup_s minus as many steady (median timed) steps: what compiling cost",
       "s", direction=LOWER, label="compile overhead s", group="compile"),
    _m("graph_breaks", "dynamo graph breaks during training (each one splits the compiled graph)", fmt="int",
       direction=LOWER, label="graph breaks", group="compile"),
    _m("compiled_graphs", "distinct graphs dynamo compiled during training", fmt="int", label="graphs",
       group="compile"),
    _m("dynamo_frames", "Python frames dynamo compiled during training (recompiles included)", fmt="int",
       label="frames compiled", group="compile"),
    # machine noise (bench/trackers/cpu_load.py)
    _m("step_time_spread", "step_time_p90_s / step_time_p50_s of the timed steps", label="step p90/p50",
       group="noise"),
    _m("other_cpu_share", "share of the machine's CPU cores other processes used during the timed steps (the "
       "supervisor included)", label="others' CPU", group="noise"),
    _m("load_avg_1m", "the machine's 1-minute load average when the cell ended", label="load avg", group="noise"),
    _m("noisy", "true when other_cpu_share > 15% or step p90/p50 > 1.5 (5+ timed steps): speed figures not "
       "comparable; the record's notes give the figures", label="noisy", group="noise"),
    # memory
    _m("train_peak_nvml_process_mib", "HEADLINE memory: peak NVML memory of the cell's process tree during "
       "training", "MiB", direction=LOWER, label="train peak MiB (process tree; torch alloc)",
       plot_label="training peak of the cell's processes, NVML (MiB)", group="memory"),
    _m("train_peak_nvml_device_minus_baseline_mib", "the headline's stand-in where NVML cannot attribute memory to "
       "the cell's processes: training peak of the device minus what it held just before the cell", "MiB",
       direction=LOWER, label="train peak MiB (device - baseline)", group="memory"),
    _m("train_peak_nvml_mib", "peak NVML device memory during training (other processes included)", "MiB",
       direction=LOWER, label="train peak device MiB", group="memory"),
    _m("peak_nvml_process_mib", "peak NVML memory of the cell's process tree over the whole cell", "MiB",
       direction=LOWER, label="cell peak MiB (process tree)", group="memory"),
    _m("peak_nvml_mib", "peak NVML device memory over the whole cell", "MiB", direction=LOWER,
       label="peak GPU MiB (device, NVML; torch alloc)", plot_label="peak GPU memory, NVML (MiB)", group="memory"),
    _m("baseline_nvml_mib", "device memory in use just before the cell started (held by other processes)", "MiB",
       label="baseline MiB", group="memory"),
    _m("suite_baseline_nvml_mib", "device memory in use when the suite started (held by other processes)", "MiB",
       label="suite baseline MiB", group="memory"),
    _m("torch_peak_allocated_mib", "torch max allocated during the training phase", "MiB", direction=LOWER,
       label="peak torch alloc MiB", plot_label="peak torch allocated (MiB)", group="memory"),
    _m("torch_peak_reserved_mib", "torch max reserved during the training phase", "MiB", direction=LOWER,
       label="peak torch reserved MiB", group="memory"),
    _m("peak_rss_mib", "peak resident memory of the cell process over its life (its own count, ru_maxrss)", "MiB",
       direction=LOWER, label="peak RSS MiB (CPU)", plot_label="peak process RSS (MiB; CPU run, no GPU)",
       group="memory"),
    _m("peak_rss_tree_mib", "peak resident memory of the cell's process tree, sampled every ~20 ms", "MiB",
       direction=LOWER, label="peak RSS MiB (tree)", group="memory"),
    _m("train_peak_rss_mib", "HEADLINE memory on CPU: peak resident memory of the process tree during training",
       "MiB", direction=LOWER, label="train peak RSS MiB (CPU)",
       plot_label="training peak RSS of the cell's processes (MiB; CPU run)", group="memory"),
    _m("rss_at_train_start_mib", "resident memory of the tree when training started (model, data, libraries)",
       "MiB", label="RSS at train start MiB", group="memory"),
    _m("train_rss_growth_mib", "train_peak_rss_mib - rss_at_train_start_mib: what training itself added", "MiB",
       direction=LOWER, label="train RSS growth MiB", plot_label="memory training added, RSS growth (MiB; CPU run)",
       group="memory"),
    # distributed cells (bench/cell/distributed.py): the figures of every rank are in the record's `ranks`
    _m("world_size", "ranks of a distributed cell (torchrun; one process: not recorded)", label="ranks", fmt="int",
       group="distributed"),
    _m("rank_peak_rss_mib", "distributed cells: the largest rank's own resident peak (ru_maxrss) after training",
       "MiB", direction=LOWER, label="largest rank RSS MiB", group="distributed"),
    _m("comm_share", "distributed cells: time the collectives were in flight (DDP: gradient all-reduces, FSDP: "
       "all-gathers + reduce-scatters; launch to completion, CUDA events on GPUs) / the timed steps' time, the "
       "largest rank's; overlaps compute and includes waiting for the slowest rank, not additive",
       label="comm share", group="distributed"),
    _m("rank_peak_torch_allocated_mib", "distributed cells: the largest rank's torch peak allocated in training",
       "MiB", direction=LOWER, label="largest rank torch MiB", group="distributed"),
    _m("nvml_samples", "NVML samples taken during the cell", label="NVML samples", fmt="int", group="memory"),
    _m("nvml_errors", "NVML samples that failed (driver errors); the others still count", label="NVML errors",
       fmt="int", group="memory"),
    _m("nvml_gpus", "GPUs NVML sampled for a distributed cell (rank i on the i-th; its memory figures are the "
       "largest GPU's, its energy the GPUs' sum, each GPU's figures in its rank's row of `ranks`)", label="GPUs",
       fmt="int", group="memory"),
    # memory estimate (bench/plan/memory.py): what torch will allocate, before the CUDA context
    _m("estimate_weights_mib", "estimated bytes of the weights as the method leaves them (quantized, half or fp32)",
       "MiB", label="est. weights MiB", group="estimate"),
    _m("estimate_gradients_mib", "estimated gradients (fp32, trainable parameters)", "MiB",
       label="est. gradients MiB", group="estimate"),
    _m("estimate_optimizer_mib", "estimated AdamW state (two fp32 moments per trainable parameter)", "MiB",
       label="est. optimizer MiB", group="estimate"),
    _m("estimate_activations_mib", "activations saved for backward, counted over fake tensors in one forward "
       "(bench/plan/saved.py; by formula where that cannot run, said in notes)", "MiB",
       label="est. activations MiB", group="estimate"),
    _m("estimate_transient_mib", "what the loss's backward holds on top: the logits' gradient (fp32 and the "
       "compute dtype)", "MiB", label="est. transient MiB", group="estimate"),
    _m("estimate_total_mib", "the sum: the estimated peak torch allocation of training", "MiB",
       label="est. total MiB", group="estimate"),
    # energy
    _m("energy_j", "NVML energy counter over the whole cell (load, evals and save included)", "J",
       direction=LOWER, label="cell energy J", group="energy"),
    _m("train_energy_j", "NVML energy during the timed training steps", "J", direction=LOWER,
       label="train energy J", group="energy"),
    _m("energy_per_token_j", "train_energy_j / timed_tokens", "J", direction=LOWER, label="J/token (train)",
       group="energy"),
    # scores
    _m("score_before", "the task's headline metric before training (null when eval_before is false)",
       label="score before", plot_label="score before training", group="score"),
    _m("score_after", "the task's headline metric after training", label="score after",
       plot_label="score after training", group="score"),
    _m("eval_time_s", "time of the evaluations before and after training", "s", label="eval s", group="score"),
    _m("curve_eval_time_s", "time of the score-curve evaluations (eval_every), paused out of the training phase",
       "s", label="curve eval s", group="score"),
    _m("general_loss_before", "LM loss on general text before training, method attached (causal LM)",
       label="general loss before", group="score"),
    _m("general_loss_after", "the same after training", label="general loss after", group="score"),
    _m("forgetting_delta", "general_loss_after - general_loss_before", direction=LOWER, label="forgetting Δ",
       group="score"),
    # inference phase (opt-in, bench/cell/inference.py)
    _m("inference_tokens_per_s_base", "greedy generation tokens/s of the base model alone (the adapter removed with "
       "peft's unload() on a copy; under a soft prompt the untouched base)", "tokens/s", direction=HIGHER,
       label="base tokens/s", group="inference"),
    _m("inference_tokens_per_s_adapter", "the same with the trained adapter, unmerged (the peft model)", "tokens/s",
       direction=HIGHER, label="adapter tokens/s", group="inference"),
    _m("inference_tokens_per_s_merged", "the same for a copy merged with merge_and_unload()", "tokens/s",
       direction=HIGHER, label="merged tokens/s", group="inference"),
    *(
        spec
        for variant, what in (("base", "base model"), ("adapter", "unmerged adapter"), ("merged", "merged copy"))
        for spec in (
            _m(f"inference_ttft_ms_{variant}", f"time to first token (prefill + one token), {what}", "ms",
               direction=LOWER, label=f"{variant} TTFT ms", group="inference"),
            _m(f"inference_decode_ms_per_token_{variant}",
               f"decode latency per token after the first (arrival times within one generate call), {what}", "ms",
               direction=LOWER, label=f"{variant} decode ms/token", group="inference"),
        )
    ),
    _m("merge_logit_max_abs_diff", "largest |logit| difference between the merged copy and the unmerged peft model "
       "on the inference prompt (0 exactly: the adapter changes nothing)", label="merge |Δ logit| max",
       group="inference"),
)  # fmt: skip
# task metrics appear with the suffixes _before / _after (e.g. accuracy_after, macro_f1_before)
PATTERNS: dict[str, str] = {
    r"[a-z0-9_]+_(before|after)": "a task metric before / after training (accuracy, macro_f1, exact_match, ...)",
}


def table(extra: dict[str, dict[str, Any]] | None = None) -> dict[str, MetricSpec]:
    """name -> spec: the core rows, then rows a record carries for its plugins' metrics."""
    out = {s.name: s for s in CORE}
    for name, data in (extra or {}).items():
        out.setdefault(name, MetricSpec.from_dict({**data, "name": name}))
    return out


def documented(name: str, extra: dict[str, Any] | None = None) -> bool:
    return name in table(extra) or any(re.fullmatch(p, name) for p in PATTERNS)
