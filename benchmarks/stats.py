"""Summary figures shared by the benchmark scripts: percentiles and one-line reports."""

from __future__ import annotations

import math
import os
import platform
import statistics
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by the nearest-rank method: always an observed value."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_line(
    label: str, values: Sequence[float], *, unit: str = "s", scale: float = 1.0, digits: int = 3, width: int = 0
) -> str:
    """``label: median X (min A, max B, n=N)`` with values multiplied by ``scale``."""
    v = [x * scale for x in values]
    return (
        f"{label + ':':<{width}} median {statistics.median(v):.{digits}f} {unit} "
        f"(min {min(v):.{digits}f}, max {max(v):.{digits}f}, n={len(v)})"
    )


def verdict(measured: float, target: float, *, lower_is_better: bool = True) -> str:
    """``MET`` or ``MISSED by X%`` against a target."""
    met = measured <= target if lower_is_better else measured >= target
    if met:
        return "MET"
    off = (measured / target - 1) * 100 if lower_is_better else (1 - measured / target) * 100
    return f"MISSED by {off:.0f}%"


def machine_line() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"machine: {cpus} cpus, Python {platform.python_version()}, {platform.system()} {platform.release()}; {load_line()}"


def load_line() -> str:
    """The 1-minute load average: above the cpu count, other work shared the machine."""
    return f"load average (1 min) {os.getloadavg()[0]:.2f}"
