"""Parameter counts of a model as a method leaves it (4-bit weights counted unpacked, as peft does)."""

from __future__ import annotations

from typing import Any


def numel(p: Any) -> int:
    """Logical elements of a parameter; 4-bit packed weights count their unpacked elements, as peft does."""
    n = p.numel()
    if type(p).__name__ == "Params4bit":
        n = n * 2 * p.element_size()
    return n


def count_params(model: Any) -> tuple[int, int]:
    """(trainable, total)."""
    trainable = total = 0
    for p in model.parameters():
        n = numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
