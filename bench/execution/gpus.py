"""Which GPUs cells run on, and whether they are free.

GPUs are numbered as NVML and nvidia-smi number them (PCI bus order); every cell gets
`CUDA_DEVICE_ORDER=PCI_BUS_ID` and `CUDA_VISIBLE_DEVICES=<that GPU's UUID>`, so CUDA and NVML always mean the
same device. An inherited `CUDA_VISIBLE_DEVICES` (a Slurm allocation, a container) limits the choice and keeps its
order: indices are read in PCI bus order, UUIDs (GPU-..., MIG-...) exactly.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from bench.trackers import nvml


class BusyGpu(RuntimeError):
    pass


class GpuSelectionError(ValueError):
    pass


@dataclass(frozen=True)
class GpuSlot:
    index: int  # NVML index (PCI bus order): what the sampler reads
    uuid: str  # what the cell's CUDA_VISIBLE_DEVICES names
    name: str

    def cell_env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": self.uuid, "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def job_gpus(spec: Any) -> tuple[Any, str | None, list[GpuSlot]]:
    """(NVML backend or None, why not, the GPUs a job's cell holds on this node): the allocation in its order
    (CUDA_VISIBLE_DEVICES), its first `nproc` for a distributed GPU cell, else its first; none without a GPU or
    for a `device: cpu` cell (no GPU is sampled for it, as on the local executor)."""
    if spec.device == "cpu":
        return None, "a device: cpu cell: no GPU is sampled", []
    backend, reason = nvml.open_backend()
    slots = [s for s in resolve_slots(backend, None, inherited_visible_devices()) if s is not None]
    nproc = spec.distributed["nproc"] if spec.distributed else 1
    return backend, reason, slots[:nproc]


def resolve_slots(backend: Any, requested: list[int] | None, inherited: str | None) -> list[GpuSlot | None]:
    """The GPU slots to use, in order; [None] (one CPU slot) without NVML or with no GPU visible."""
    if backend is None:
        return [None]
    every = [GpuSlot(i, backend.uuid(i), backend.name(i)) for i in range(backend.device_count())]
    allowed = _inherited(backend, every, inherited) if inherited is not None else every
    if not allowed:
        return [None]
    if not requested:
        return list(allowed)
    by_index = {s.index: s for s in allowed}
    unknown = [g for g in requested if g not in by_index]
    if unknown:
        scope = f"CUDA_VISIBLE_DEVICES={inherited!r} allows" if inherited is not None else "NVML sees"
        raise GpuSelectionError(
            f"--gpus {','.join(map(str, requested))}: GPU(s) {unknown} not available; {scope} "
            f"{', '.join(str(s.index) for s in allowed)} (NVML / nvidia-smi numbering)"
        )
    return [by_index[g] for g in requested]


def _inherited(backend: Any, every: list[GpuSlot], value: str) -> list[GpuSlot]:
    out = []
    for item in [v.strip() for v in value.split(",") if v.strip()]:
        if item.isdigit():
            index = int(item)
            if index >= len(every):
                raise GpuSelectionError(
                    f"CUDA_VISIBLE_DEVICES={value!r}: index {index} but NVML sees {len(every)} GPU(s)"
                )
            out.append(every[index])
        elif item.startswith("MIG-"):  # sampled on its parent GPU: NVML memory figures are the whole GPU's
            try:
                parent = backend.mig_parent_index(item)
            except Exception as exc:
                raise GpuSelectionError(
                    f"CUDA_VISIBLE_DEVICES={value!r}: cannot find the GPU of {item}: {exc}"
                ) from exc
            out.append(GpuSlot(parent, item, f"{every[parent].name} (MIG {item})"))
        else:
            match = next((s for s in every if s.uuid == item or s.uuid.startswith(item)), None)
            if match is None:
                raise GpuSelectionError(f"CUDA_VISIBLE_DEVICES={value!r}: no GPU with UUID {item!r}")
            out.append(match)
    return out


def inherited_visible_devices() -> str | None:
    return os.environ.get("CUDA_VISIBLE_DEVICES")


@dataclass
class GpuWatch:
    """Busy checks for one slot: at suite start (by PID and by device memory) and before each cell (device
    memory over the suite-start baseline, which also sees processes hidden by a container's PID namespace)."""

    backend: Any
    slot: GpuSlot
    threshold_mib: float
    allow_busy: bool
    wait_s: float = 60.0
    start_used_mib: float | None = None

    def check_start(self, exclude: set[int]) -> None:
        self.start_used_mib = self.backend.used_mib(self.slot.index)
        if self.allow_busy:
            return
        busy = nvml.busy_processes(self.backend, self.slot.index, self.threshold_mib, exclude)
        if busy or self.start_used_mib > self.threshold_mib:
            listed = "\n  ".join(busy) or "(no process visible: another container or PID namespace?)"
            raise BusyGpu(
                f"GPU {self.slot.index} ({self.slot.name}) is busy: {self.start_used_mib:.0f} MiB used before any "
                f"cell, over --busy-threshold-mib {self.threshold_mib:.0f}; measurements would be untrustworthy. "
                f"Processes:\n  {listed}\nUse --allow-busy-gpu to run anyway (the memory held is recorded)."
            )

    def before_cell(self) -> list[str]:
        """Wait (up to wait_s) for memory above the suite-start baseline to be freed; notes for the record."""
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                used = self.backend.used_mib(self.slot.index)
            except Exception as exc:  # NVML trouble must not stop the suite; the sampler records it per cell
                return [f"busy check before the cell skipped: NVML error {type(exc).__name__}: {exc}"]
            extra = used - (self.start_used_mib or 0.0)
            if extra <= self.threshold_mib:
                return []
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        message = (
            f"GPU {self.slot.index} holds {extra:.0f} MiB more than at suite start ({used:.0f} vs "
            f"{self.start_used_mib:.0f} MiB) after waiting {self.wait_s:.0f} s: a leftover or foreign process"
        )
        if not self.allow_busy:
            raise BusyGpu(message + "; stopping before the next cell (--allow-busy-gpu to go on)")
        return [message + "; running anyway (--allow-busy-gpu)"]
