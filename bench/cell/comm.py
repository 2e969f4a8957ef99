"""The time a distributed cell's collectives are in flight over the timed steps: DDP's gradient all-reduces
through its communication hook, FSDP2's all-gathers and reduce-scatters through its custom-collective interface.

On a GPU, CUDA events: one recorded on the launching stream when a collective is launched, one where its
completion is ordered (the stream FSDP waits on after a blocking collective; inside the future's callback,
whose current stream torch synchronises with the work). NCCL's futures complete when the work is *enqueued*, so
host clocks around them would time the launch, not the communication. The events are read once, after training
(no host synchronisation inside a step). On a CPU (gloo: the work runs on gloo's threads), perf_counter from the
launch to the future's completion."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

FSDP_KINDS = ("all_gather", "reduce_scatter")


class CommClock:
    def __init__(self, cuda: bool = False) -> None:
        self.cuda = cuda
        self.hooked = False  # set once the strategy's collectives go through this clock
        self.why_not: str | None = None  # why they cannot (this torch)
        self.timing = False  # the timed steps began: only their collectives are counted
        self.seconds: dict[str, float] = {}
        self.calls = 0
        self.events: list[tuple[str, Any, Any]] = []

    def timed_start(self) -> None:
        self.timing = True

    def launch(self, kind: str) -> Callable[[], None]:
        """Marks a collective's launch now; the function returned marks its completion."""
        if not self.timing:
            return lambda: None
        self.calls += 1
        if not self.cuda:
            t0 = time.perf_counter()
            return lambda: self._add(kind, time.perf_counter() - t0)
        import torch

        start = torch.cuda.Event(enable_timing=True)
        start.record()

        def done() -> None:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.events.append((kind, start, end))

        return done

    def _add(self, kind: str, seconds: float) -> None:
        self.seconds[kind] = self.seconds.get(kind, 0.0) + seconds

    def by_kind(self) -> dict[str, float] | None:
        """Seconds in flight per kind of collective over the timed steps (None when not hooked)."""
        if not self.hooked:
            return None
        for kind, start, end in self.events:
            end.synchronize()
            self._add(kind, start.elapsed_time(end) / 1000)  # ms
        self.events.clear()
        return dict(self.seconds)

    @property
    def timed_launches(self) -> int | None:
        """Collectives launched in the timed steps (DDP: one per gradient bucket and effective batch)."""
        return self.calls if self.hooked else None

    def ddp_hook(self) -> Any:
        """DDP's default all-reduce, timed (unannotated: DDP checks any annotation against dist.GradBucket)."""
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def timed_allreduce(state, bucket):  # type: ignore[no-untyped-def]
            done = self.launch("all_reduce")

            def finished(fut):  # type: ignore[no-untyped-def]
                done()
                return fut.value()

            return allreduce_hook(state, bucket).then(finished)

        return timed_allreduce

    def install_fsdp(self, modules: list[Any]) -> None:
        """Every FSDP2 module's all-gather and reduce-scatter through this clock (`why_not` says why this torch
        cannot)."""
        try:
            from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter
        except ImportError as exc:
            self.why_not = f"this torch's FSDP2 has no custom collectives to time ({exc})"
            return
        clock = self

        class TimedAllGather(DefaultAllGather):  # a subclass: FSDP's own checks still see its default
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                done = clock.launch("all_gather")  # before the call: a blocking one has ended when it returns
                return finish(super().__call__(*args, **kwargs), done)

        class TimedReduceScatter(DefaultReduceScatter):
            def __call__(self, *args: Any, **kwargs: Any) -> Any:
                done = clock.launch("reduce_scatter")  # before the call: a blocking one has ended when it returns
                return finish(super().__call__(*args, **kwargs), done)

        if not all(hasattr(m, "set_custom_reduce_scatter") for m in modules):
            self.why_not = "this torch's FSDP2 has no set_custom_all_gather / set_custom_reduce_scatter to time"
            return
        for module in modules:
            module.set_custom_all_gather(TimedAllGather())
            module.set_custom_reduce_scatter(TimedReduceScatter())
        self.hooked = True


def finish(work: Any, done: Callable[[], None]) -> Any:
    """A blocking collective (no work returned) has completed on the host, or is ordered before the current
    stream's next work on a GPU; an asynchronous one completes with its future."""
    if work is None:
        done()
    else:
        work.get_future().then(lambda _: done())
    return work
