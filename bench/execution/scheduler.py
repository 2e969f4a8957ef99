"""Runs work items on a fixed set of slots (GPU indices, or one CPU slot), one item per slot at a time.

Never two items on one slot; every item runs once unless stopped. The calling thread only waits, so it
stays responsive to signals (the runner's Ctrl-C handler)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any


def execute(
    items: Sequence[Any],
    slots: Sequence[Any],
    run: Callable[[Any, Any], Any],
    on_done: Callable[[Any, Any], None],
    should_stop: Callable[[], bool],
) -> None:
    """run(item, slot) in one worker thread per slot; on_done(result, slot) is called under a lock."""
    todo: queue.Queue = queue.Queue()
    for item in items:
        todo.put(item)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(slot: Any) -> None:
        try:
            while not should_stop():
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    return
                result = run(item, slot)
                with lock:
                    on_done(result, slot)
        except BaseException as exc:  # surfaced in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(slot,), daemon=True, name=f"slot-{slot}") for slot in slots]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.05)
    if errors:
        raise errors[0]
