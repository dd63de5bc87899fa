"""Tests parametrized over the registry: a new algorithm is tested by adding it."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator
from bench.tasks import make_task_source

REGRESSION = [n for n in ALGORITHMS.names() if "regression" in ALGORITHMS.get(n).task_types]


def build(name, suite, **hparams):
    algorithm = ALGORITHMS.get(name)
    values = {**suite.algorithms.get(name, {}), **hparams}
    return algorithm(algorithm.Hparams(**values), problem_for(suite, make_task_source(suite)), generator("test", name))


# learn2learn's wrappers (*.l2l) are left out: tests/algorithms/test_equivalence.py holds their
# meta-gradients equal to ours in float64, so ours learning is theirs learning (and 50 s less).
@pytest.mark.parametrize("name", [n for n in REGRESSION if not n.endswith(".l2l")])
def test_meta_training_lowers_the_validation_error(name):
    """Every algorithm must learn on sine: 300 meta-iterations cut validation MSE by a clear margin."""
    suite = load_suite("sine", tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    val, _ = episodes.fixed("val", 100)
    algorithm = build(name, suite)
    steps = algorithm.evaluation_steps(suite.test_inner_steps)
    before = algorithm.evaluate(val, steps).mean().item()
    for iteration in range(300):
        algorithm.meta_train_step(episodes.train(0, iteration), iteration)
    after = algorithm.evaluate(val, steps).mean().item()
    assert after < 0.85 * before, f"{name}: validation MSE {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", REGRESSION)
def test_construction_uses_only_the_given_generator(name):
    if name.endswith(".l2l"):
        pytest.importorskip("learn2learn")
    suite = load_suite("sine", tier="smoke")
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = build(name, suite).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(2)
    second = build(name, suite).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", REGRESSION)
def test_evaluate_returns_one_finite_value_per_task_and_leaves_weights_alone(name):
    if name.endswith(".l2l"):
        pytest.importorskip("learn2learn")
    suite = load_suite("sine", tier="smoke")
    batch, _ = Episodes(suite, torch.device("cpu")).fixed("test", 7)
    algorithm = build(name, suite)
    weights = {k: v.clone() for k, v in algorithm.state_dict().items()}
    values = algorithm.evaluate(batch, 3)
    assert values.shape == (7,) and torch.isfinite(values).all()
    assert all(torch.equal(weights[k], v) for k, v in algorithm.state_dict().items())
