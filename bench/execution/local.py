"""The local executor: this machine's GPUs as slots (one cell per GPU at a time, or one CPU slot), a launcher
per slot, busy checks at suite start and before every cell."""

from __future__ import annotations

import os
from typing import Any

from bench.env.facts import base_env
from bench.execution.base import LocalOptions, RunContext
from bench.execution.gpus import GpuSlot, GpuWatch, inherited_visible_devices, resolve_slots
from bench.execution.launchers import make_launcher, preload_for, resolve_launcher
from bench.execution.scheduler import execute
from bench.execution.supervise import CellJob, supervise_cell
from bench.results.record import FIT_CHECK_ERROR, CellExit, Record, Status, build_record
from bench.suite.spec import RunSpec
from bench.trackers import nvml

CUDA_CONTEXT_MIB = 600.0  # what a process's CUDA context takes besides torch's allocations (H100/H200: ~500-600)


class FitCheck:
    """Cells whose estimated peak (plus a CUDA context) exceeds the GPU's free memory are recorded `unsupported`
    instead of started (`--no-fit-check` turns this off)."""

    def __init__(self, backend: Any, specs: list[RunSpec]):
        from bench.plan.memory import ConfigCache, estimate_spec

        self.backend = backend
        configs = ConfigCache()  # each model's config fetched once for the whole suite
        self.estimates = {s.run_id: estimate_spec(s, configs)[0] for s in specs}

    def refuse(self, spec: RunSpec, slot: GpuSlot, ctx: RunContext, more: tuple[GpuSlot, ...] = ()) -> Record | None:
        """The per-rank estimate against every GPU the cell would hold (a distributed cell: the tightest one)."""
        est = self.estimates.get(spec.run_id)
        if est is None:
            return None
        try:
            frees = {s: self.backend.total_mib(s.index) - self.backend.used_mib(s.index) for s in (slot, *more)}
            slot = min(frees, key=frees.__getitem__)
            free = frees[slot]
        except Exception:  # no figure, no refusal: the cell runs and its own record says what happened
            return None
        need = est.total_mib + CUDA_CONTEXT_MIB
        if need <= free:
            return None
        why = (
            f"estimated {need / 1024:.1f} GiB (training {est.total_mib / 1024:.1f} + CUDA context) > "
            f"{free / 1024:.1f} GiB free on GPU {slot.index}; --no-fit-check runs it anyway"
        )
        parent = {"metrics": est.as_metrics(), "run_dir": str(ctx.out.run(spec.run_id).path), "gpu_index": slot.index}
        rec = build_record(spec, None, CellExit(None, Status.UNSUPPORTED, why), parent)
        rec.error = {"type": FIT_CHECK_ERROR, "message": why}  # not a verdict on the cell: checked again next run
        return rec


def too_wide(spec: RunSpec, slots: list[Any], ctx: RunContext) -> Record:
    why = (
        f"{spec.world_size} ranks need {spec.world_size} GPUs; this run has {len(slots)} "
        f"({', '.join(str(s.index) for s in slots)}; --gpus, CUDA_VISIBLE_DEVICES)"
    )
    parent = {"run_dir": str(ctx.out.run(spec.run_id).path)}
    return build_record(spec, None, CellExit(None, Status.UNSUPPORTED, why), parent)


def run_all(on_gpu: list[RunSpec], on_cpu: list[RunSpec], slots: list[Any], run: Any, ctx: RunContext) -> None:
    """One-GPU cells one per slot; then cells with several ranks, one at a time on the first slots they need (no
    deadlock between them and one-GPU cells); then CPU cells on the CPU slot."""

    def done(rec: Record, slot: Any) -> None:
        ctx.on_record(rec)

    one = [s for s in on_gpu if s.world_size == 1]
    if one:
        execute(one, slots, run, done, ctx.should_stop)
    for spec in [s for s in on_gpu if s.world_size > 1]:
        if ctx.should_stop():
            break
        n = spec.world_size
        done(run(spec, slots[0], tuple(slots[1:n])) if n <= len(slots) else too_wide(spec, slots, ctx), None)
    if on_cpu:
        execute(on_cpu, [None], run, done, ctx.should_stop)


class LocalExecutor:
    name = "local"

    def __init__(self, options: LocalOptions):
        self.options = options

    def run(self, specs: list[RunSpec], ctx: RunContext) -> None:
        """GPU cells one per GPU slot; `device: cpu` cells on one CPU slot after them (no GPU, no NVML, no fit
        check: a CPU suite on an 8-GPU node is not run eight cells wide)."""
        opts = self.options
        backend, reason = nvml.open_backend()
        slots = resolve_slots(backend, opts.gpus, inherited_visible_devices())
        on_gpu = [s for s in specs if s.device != "cpu"] if slots != [None] else []
        on_cpu = [s for s in specs if s not in on_gpu]
        watches = self._watch(backend, slots) if on_gpu else {}
        env_parent = base_env()
        if backend is not None:
            env_parent["gpu_driver"] = backend.driver()
        launchers: dict[GpuSlot | None, Any] = {}
        if on_gpu:
            name = resolve_launcher(opts.launcher, True)
            launchers = {s: make_launcher(name, ctx.out.path / f"forkserver-{s.index}.log") for s in slots}
        if on_cpu:
            launchers[None] = make_launcher(resolve_launcher(opts.launcher, False), ctx.out.path / "forkserver-cpu.log")
        if len(slots) > 1 and on_gpu:
            ctx.progress(f"running on GPUs {', '.join(str(s.index) for s in slots)}, one cell per GPU at a time")
        try:
            for slot, launcher in launchers.items():
                launcher.start(dict(os.environ), preload_for(on_gpu if slot is not None else on_cpu))
            fits = FitCheck(backend, on_gpu) if on_gpu and opts.fit_check else None
            cpu_reason = "a device: cpu cell: no GPU is sampled" if backend is not None else reason

            def run(spec: RunSpec, slot: GpuSlot | None, more: tuple[GpuSlot, ...] = ()) -> Record:
                watch = watches.get(slot)
                refused = fits.refuse(spec, slot, ctx, more) if fits and slot else None
                if refused is not None:
                    return refused
                job = CellJob(
                    spec=spec,
                    run_dir=ctx.out.run(spec.run_id),
                    launcher=launchers[slot],
                    slot=slot,
                    backend=backend if slot is not None else None,
                    nvml_reason=reason if slot is not None else cpu_reason,
                    nvml_interval_s=opts.nvml_interval_s,
                    env_parent=env_parent,
                    should_stop=ctx.should_stop,
                    exit_grace_s=opts.exit_grace_s,
                    notes=[n for s in (slot, *more) if (w := watches.get(s)) for n in w.before_cell()],
                    metrics={"suite_baseline_nvml_mib": watch.start_used_mib} if watch else {},
                    progress=ctx.progress,
                    heartbeat_s=opts.heartbeat_s,
                    more_slots=more,
                )
                return supervise_cell(job)

            run_all(on_gpu, on_cpu, slots, run, ctx)
        finally:
            for launcher in launchers.values():
                launcher.close()

    def _watch(self, backend: Any, slots: list[GpuSlot | None]) -> dict[GpuSlot, GpuWatch]:
        """Busy checks per GPU, the suite-start one done now (BusyGpu stops the suite before any cell)."""
        if backend is None:
            return {}
        opts = self.options
        watches = {}
        for slot in slots:
            watch = GpuWatch(backend, slot, opts.busy_threshold_mib, opts.allow_busy_gpu, opts.busy_wait_s)
            watch.check_start({os.getpid()})
            watches[slot] = watch
        return watches
