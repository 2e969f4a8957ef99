"""Metrics computed directly (one way for every task): accuracy, macro-F1, exact match.

`evaluate.load("accuracy")` fetches its script from the hub, so it cannot run offline; these pure functions
give the same numbers and are checked against hand-computed cases in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def accuracy(preds: Sequence[int], refs: Sequence[int]) -> float:
    if len(preds) != len(refs) or not refs:
        raise ValueError("accuracy needs equal, non-empty prediction and reference lists")
    return sum(int(p == r) for p, r in zip(preds, refs)) / len(refs)


def macro_f1(preds: Sequence[int], refs: Sequence[int], labels: Iterable[int]) -> float:
    """Unweighted mean of per-class F1; a class with no predictions and no references scores 0."""
    scores = []
    for c in labels:
        tp = sum(1 for p, r in zip(preds, refs) if p == c and r == c)
        fp = sum(1 for p, r in zip(preds, refs) if p == c and r != c)
        fn = sum(1 for p, r in zip(preds, refs) if p != c and r == c)
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / len(scores)


def exact_match(preds: Sequence[Sequence[int] | str], refs: Sequence[Sequence[int] | str]) -> float:
    if len(preds) != len(refs) or not refs:
        raise ValueError("exact_match needs equal, non-empty prediction and reference lists")
    return sum(int(list(p) == list(r)) for p, r in zip(preds, refs)) / len(refs)
