from __future__ import annotations

import numpy as np
import pytest

from bench.stats import mean_ci95, paired_p_value, ranks_with_ties


def test_mean_ci95_is_the_normal_interval_with_population_std():
    mean, ci = mean_ci95([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and ci == pytest.approx(1.96 * np.std([1, 2, 3, 4]) / 2)


def test_paired_test_sees_a_shift_that_an_unpaired_comparison_misses():
    rng = np.random.default_rng(0)
    episode_difficulty = rng.normal(0, 10, size=200)  # dominates the spread, shared by both entries
    a = episode_difficulty + rng.normal(0, 0.1, size=200)
    b = a + 0.2
    assert paired_p_value(a, b) < 1e-6
    assert abs(a.mean() - b.mean()) < np.sqrt(2) * 1.96 * a.std() / np.sqrt(200)  # the interval rule would tie them


def test_paired_test_direction_and_degenerate_differences():
    a = np.arange(10.0)
    assert paired_p_value(a, a) == 1.0
    assert paired_p_value(a, a + 1, alternative="less") == 0.0
    assert paired_p_value(a, a + 1, alternative="greater") == 1.0
    noisy = a + np.random.default_rng(1).normal(0, 0.01, size=10) - 1
    assert paired_p_value(noisy, a, alternative="less") < 0.01 < paired_p_value(noisy, a, alternative="greater")
    with pytest.raises(ValueError):
        paired_p_value([1.0, 2.0], [1.0])


def test_ties_share_the_average_rank_and_group_against_the_leader():
    # 0 ~ 1 ~ 2 in a chain, but 0 differs from 2: the chain must not tie first and last.
    differs = {(0, 2), (0, 3), (2, 3)}
    ranks, groups = ranks_with_ties(4, lambda i, j: (i, j) in differs)
    assert ranks == [1.5, 1.5, 3.0, 4.0] and groups == [1, 1, 2, 3]
    assert ranks_with_ties(3, lambda i, j: False) == ([2.0, 2.0, 2.0], [1, 1, 1])
    assert ranks_with_ties(3, lambda i, j: True) == ([1.0, 2.0, 3.0], [1, 2, 3])
    assert ranks_with_ties(0, lambda i, j: True) == ([], [])
