"""Versa: a Gaussian classifier per class from its support features; the sampled predictive loss; deterministic tests."""

from __future__ import annotations

import math

import torch

from bench.algorithms import ALGORITHMS
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def build(**hparams):
    cls = ALGORITHMS.get("versa")
    return cls(cls.Hparams(**hparams), synthetic_problem(), generator("versa"))


def test_one_sample_with_zero_variance_is_the_cross_entropy_of_the_mean_classifier():
    algorithm = build(samples=1)
    with torch.no_grad():
        algorithm.amortizer.log_variance.bias.fill_(-200.0)  # variance ~ e^-200: the sample is the mean
        algorithm.amortizer.log_variance.weight.zero_()
    batch = synthetic_batch(tasks=2, queries=3)
    support, query = algorithm.embed_episode(algorithm.backbone.params(), batch)
    scores = algorithm.scores(support, batch.support_y, query, 5)
    expected = torch.nn.functional.cross_entropy(scores.flatten(0, 1), batch.query_y.flatten())
    torch.testing.assert_close(algorithm.meta_loss(batch), expected)


def test_the_loss_is_minus_the_log_of_the_predictive_averaged_over_samples():
    algorithm = build(samples=4)
    batch = synthetic_batch(tasks=2, queries=3)
    state = algorithm.generator.get_state()
    loss = algorithm.meta_loss(batch)
    algorithm.generator.set_state(state)
    support, query = algorithm.embed_episode(algorithm.backbone.params(), batch)
    mean, log_variance = algorithm.classifier(support, batch.support_y, 5)
    noise = torch.randn((4, *mean.shape), generator=algorithm.generator)
    probabilities = []
    for sample in range(4):
        weights = mean + noise[sample] * (0.5 * log_variance).exp()
        logits = query @ weights[..., :-1].transpose(1, 2) + weights[..., -1].unsqueeze(1)
        probabilities.append(logits.softmax(-1).gather(-1, batch.query_y.unsqueeze(-1)).squeeze(-1))
    expected = -torch.stack(probabilities).mean(0).log().mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert not math.isclose(loss.item(), build(samples=1).meta_loss(batch).item())


def test_evaluation_is_deterministic_and_touches_no_random_state():
    algorithm = build()
    batch = synthetic_batch(tasks=2)
    state, global_state = algorithm.generator.get_state(), torch.random.get_rng_state()
    first = algorithm.evaluate(batch, 0)
    assert torch.equal(first, algorithm.evaluate(batch, 0))
    assert torch.equal(state, algorithm.generator.get_state()) and torch.equal(global_state, torch.random.get_rng_state())
