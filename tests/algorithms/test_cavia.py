"""CAVIA: only the context moves per task; the network is learned in the outer loop, through the context's steps."""

from __future__ import annotations

import torch

from bench.algorithms import ALGORITHMS, Problem
from bench.config import load_suite
from bench.seeding import generator
from bench.tasks import TaskBatch
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def sine_problem() -> Problem:
    return Problem(suite=load_suite("sine", tier="smoke"), in_shape=(1,), out_features=1)


def sine_batch(tasks: int = 3, n: int = 10) -> TaskBatch:
    gen = generator("cavia sine batch")
    x = torch.rand(tasks, 2 * n, 1, generator=gen) * 10 - 5
    amplitude = torch.rand(tasks, 1, 1, generator=gen) * 4 + 1
    y = amplitude * torch.sin(x)
    return TaskBatch(x[:, :n], y[:, :n], x[:, n:], y[:, n:])


def test_regression_conditions_the_input_and_classification_the_features():
    cls = ALGORITHMS.get("cavia")
    regression = cls(cls.Hparams(), sine_problem(), generator("cavia"))
    assert regression.context_dim == 4 and regression.backbone.layers[0].in_features == 1 + 4
    images = cls(cls.Hparams(context_dim=7), synthetic_problem(), generator("cavia"))
    assert images.context_dim == 7 and images.film.in_features == 7
    assert images.film.out_features == 2 * images.backbone.feature_dim


def test_a_zero_context_leaves_the_features_as_they_are():
    cls = ALGORITHMS.get("cavia")
    algorithm = cls(cls.Hparams(), synthetic_problem(), generator("cavia"))
    batch = synthetic_batch(tasks=2)
    params = algorithm.initial_context(batch, requires_grad=False)
    with torch.no_grad():
        torch.testing.assert_close(algorithm.predict(params, batch.query_x),
                                   algorithm.backbone.functional(params, batch.query_x))


def test_the_inner_loop_moves_the_context_alone_and_lowers_the_support_loss():
    cls = ALGORITHMS.get("cavia")
    algorithm = cls(cls.Hparams(inner_lr=0.5, inner_steps=3), sine_problem(), generator("cavia"))
    batch = sine_batch()
    params = algorithm.initial_context(batch, requires_grad=True)
    adapted = algorithm.adapt(batch, params, 3, create_graph=False)
    assert adapted["context"].shape == (3, 4) and adapted["context"].abs().sum() > 0
    assert all(adapted[name] is params[name] for name in algorithm.backbone.params())

    def support_loss(p):
        return algorithm.problem.loss(algorithm.predict(p, batch.support_x), batch.support_y)

    assert torch.all(support_loss(adapted) < support_loss(params))


def test_the_meta_gradient_reaches_the_network_through_the_context_steps():
    cls = ALGORITHMS.get("cavia")
    batch = sine_batch()
    grads = {}
    for first_order in (False, True):
        algorithm = cls(cls.Hparams(first_order=first_order), sine_problem(), generator("cavia"))
        algorithm.zero_grad(set_to_none=True)
        algorithm.meta_loss(batch).backward()
        grads[first_order] = {n: p.grad.clone() for n, p in algorithm.backbone.named_parameters()}
    # Second order differs from first order only through the context's dependence on the network.
    assert any(not torch.allclose(grads[False][n], grads[True][n]) for n in grads[False])
