"""How numbers are written for people, in one place: the report, `show` and the progress line all use these."""

from __future__ import annotations

import math
from typing import Any


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def fmt_num(x: Any) -> str:
    """3 significant digits, thousands separators, '-' for missing."""
    if _missing(x):
        return "-"
    x = float(x)
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{round(x, digits):,.{digits}f}"


def fmt_count(n: Any) -> str:
    """A count in full with thousands separators ('-' for missing)."""
    return "-" if _missing(n) else f"{int(n):,}"


def fmt_bytes(n: Any) -> str:
    if _missing(n):
        return "-"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{fmt_num(n)} {unit}"
        n /= 1024
    return f"{fmt_num(n)} TiB"


def fmt_ratio(x: Any) -> str:
    return "-" if _missing(x) else f"{fmt_num(x)}×"


def fmt_delta(x: Any) -> str:
    return "-" if _missing(x) else f"{'+' if x >= 0 else ''}{fmt_num(x)}"


HEADLINE_MEMORY = (  # the record's headline memory, in order of preference (GPU process tree, its stand-in, CPU)
    ("train_peak_nvml_process_mib", ""),
    ("train_peak_nvml_device_minus_baseline_mib", " (device - baseline)"),
    ("peak_nvml_mib", " (device, whole cell)"),
    ("train_peak_rss_mib", " RSS"),
)


def headline_memory(metrics: dict[str, Any]) -> str:
    """`1,234 MiB` with what it is when it is not the process tree's NVML peak; '-' when nothing was measured."""
    for key, what in HEADLINE_MEMORY:
        if not _missing(metrics.get(key)):
            return f"{fmt_num(metrics[key])} MiB{what}"
    return "-"
