"""Intervals over test episodes."""

from __future__ import annotations

import math
from collections.abc import Sequence


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the normal 95% half-width 1.96 * std / sqrt(n) (population std, as MAML and ProtoNets report)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / n
    return mean, 1.96 * math.sqrt(variance) / math.sqrt(n)
