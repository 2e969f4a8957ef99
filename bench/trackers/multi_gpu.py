"""A distributed cell's GPUs: one NVML tracker per GPU the cell holds (rank i trains on the i-th: the order of its
CUDA_VISIBLE_DEVICES), all watching the cell's process tree.

The record's headline figures are the largest GPU's memory (the one that decides whether the cell fits) and the sum
of the GPUs' energy (the cell's cost); a figure one GPU could not measure is null for the cell with that GPU's
reason, never a partial max or sum. Each GPU's own figures are kept (`per_gpu`) for its rank's row of the record.
"""

from __future__ import annotations

from typing import Any

from bench.trackers import Measured
from bench.trackers.nvml import FALLBACK, NvmlTracker

LARGEST = (
    "peak_nvml_mib",
    "peak_nvml_process_mib",
    "baseline_nvml_mib",
    "train_peak_nvml_mib",
    "train_peak_nvml_process_mib",
    FALLBACK,
)
SUMMED = ("energy_j", "train_energy_j", "energy_per_token_j", "nvml_samples", "nvml_errors")
PER_RANK = ("train_peak_nvml_mib", "train_peak_nvml_process_mib", "train_energy_j")


class MultiGpuTracker:
    def __init__(self, trackers: list[NvmlTracker]):
        self.trackers = trackers

    def start(self, pid: int) -> None:
        for tracker in self.trackers:
            tracker.start(pid)

    def stop(self) -> None:
        for tracker in self.trackers:
            tracker.stop()

    def attribute(self, phases: dict[str, dict[str, Any]], timed_tokens: int | None) -> Measured:
        parts = [tracker.attribute(phases, timed_tokens) for tracker in self.trackers]
        metrics, missing = combine([p.metrics for p in parts], [p.missing for p in parts])
        per_phase = {}
        for phase in parts[0].per_phase:
            per_phase[phase], _ = combine([p.per_phase.get(phase, {}) for p in parts], [{}] * len(parts))
        metrics["nvml_gpus"] = len(parts)
        notes = [f"GPU {i}: {note}" for i, p in enumerate(parts) for note in p.notes]
        per_gpu = [{k: p.metrics.get(k) for k in PER_RANK} for p in parts]
        return Measured(metrics, missing, per_phase, notes, per_gpu)


def rank_rows(measured: Measured, gpus: int) -> list[dict[str, Any]] | None:
    """Each GPU's figures for its rank's row: the multi-GPU tracker's, or one GPU's own (its figures are the cell's
    on that node); None without a GPU."""
    if measured.per_gpu is not None or gpus != 1:
        return measured.per_gpu
    return [{k: measured.metrics.get(k) for k in PER_RANK}]


def combine(
    metrics: list[dict[str, Any]], missing: list[dict[str, str]], unit: str = "GPU", largest: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, str]]:
    """The cell's figures from each GPU's (or node's: `unit`): LARGEST and `largest` keys the max, SUMMED keys the
    sum, others the first's; null where any one has no figure (with its reason)."""
    out, why = dict(metrics[0]), dict(missing[0])
    maxed = {*LARGEST, *largest}
    for key in {k for m in metrics for k in m} & {*maxed, *SUMMED}:
        values = [m.get(key) for m in metrics]
        if None in values:
            i = values.index(None)
            out[key] = None
            why[key] = f"{unit} {i}: {missing[i].get(key) or 'no figure'}"
            continue
        out[key] = max(values) if key in maxed else sum(values)
        why.pop(key, None)
    return out, why
