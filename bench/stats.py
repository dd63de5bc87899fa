"""Intervals over test episodes, paired tests on identical episodes, and ranks with ties."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05
PAIRED_TEST = "paired t-test, two-sided, 5% level, on the per-episode metric of the identical test episodes"
UNPAIRED_RULE = ("Meta-Dataset rule |m1 - m2| <= sqrt(ci1^2 + ci2^2) (the 95% intervals over episodes), "
                 "because the entries were not tested on the same episode list")


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the normal 95% half-width 1.96 * std / sqrt(n) (population std, as MAML and ProtoNets report)."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / n
    return mean, 1.96 * math.sqrt(variance) / math.sqrt(n)


def paired_p_value(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, alternative: str = "two-sided") -> float:
    """p-value of a paired t-test of ``a`` against ``b`` (same episodes, same order).

    ``alternative="less"`` tests whether ``a`` is below ``b``. Differences that are all equal
    have no variance: identical values give p = 1, a constant non-zero shift p = 0 in its direction.
    """
    a_values, b_values = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_values.shape != b_values.shape or a_values.ndim != 1 or len(a_values) < 2:
        raise ValueError(f"a paired test needs two equal-length lists of at least 2 values, "
                         f"got {a_values.shape} and {b_values.shape}")
    differences = a_values - b_values
    if np.all(differences == differences[0]):
        shift = differences[0]
        if shift == 0:
            return 1.0
        in_direction = {"two-sided": True, "less": shift < 0, "greater": shift > 0}[alternative]
        return 0.0 if in_direction else 1.0
    return float(scipy_stats.ttest_rel(a_values, b_values, alternative=alternative).pvalue)


def ranks_with_ties(n_entries: int, differ: Callable[[int, int], bool]) -> tuple[list[float], list[int]]:
    """Ranks of entries already sorted best first, where tied entries share their average rank.

    Ties are grouped from the top: each group starts at its best entry, and the following entries
    join it until one differs significantly from that best entry (``differ(leader, i)``). Grouping
    against the leader, not the neighbour, keeps a chain of small steps from tying the first entry
    with the last. Returns (rank per entry, tie group per entry, numbered from 1).
    """
    ranks: list[float] = []
    groups: list[int] = []
    start = 0
    group = 0
    while start < n_entries:
        end = start + 1
        while end < n_entries and not differ(start, end):
            end += 1
        group += 1
        shared = (start + 1 + end) / 2  # the mean of positions start+1 .. end
        ranks += [shared] * (end - start)
        groups += [group] * (end - start)
        start = end
    return ranks, groups
