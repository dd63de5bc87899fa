"""iMAML: conjugate gradient solves the implicit system, and the implicit meta-gradient is the derivative
through the inner optimisation once it has converged (float64, a small network on sine tasks)."""

from __future__ import annotations

import torch

from bench.algorithms import ALGORITHMS, Problem
from bench.algorithms.gradient import per_task
from bench.algorithms.imaml import conjugate_gradient
from bench.config import load_suite
from bench.seeding import generator
from tests.algorithms.test_cavia import sine_batch, sine_problem


def test_conjugate_gradient_solves_each_task_s_system():
    gen = generator("cg")
    tasks, n = 3, 6
    factors = torch.randn(tasks, n, n, generator=gen, dtype=torch.float64)
    matrices = factors @ factors.transpose(1, 2) + torch.eye(n, dtype=torch.float64)
    rhs = [torch.randn(tasks, n, generator=gen, dtype=torch.float64)]
    solution = conjugate_gradient(lambda v: [(matrices @ v[0].unsqueeze(-1)).squeeze(-1)], rhs, steps=n)
    torch.testing.assert_close(solution[0], torch.linalg.solve(matrices, rhs[0]), rtol=1e-8, atol=1e-10)
    zero = conjugate_gradient(lambda v: v, [torch.zeros(2, 4, dtype=torch.float64)], steps=3)
    assert torch.equal(zero[0], torch.zeros(2, 4, dtype=torch.float64))  # a zero residual stays finite


def test_the_implicit_meta_gradient_is_the_derivative_through_the_converged_inner_loop():
    cls = ALGORITHMS.get("imaml")
    hparams = cls.Hparams(inner_lr=0.01, inner_steps=4000, regularization=5.0, cg_steps=60)
    # A smooth network (tanh), so gradient descent reaches the inner optimum (a ReLU network's kinks keep
    # it chattering around it), where the implicit gradient is exact.
    smooth = load_suite("sine", tier="smoke", overrides={"model.activation": "tanh", "model.hidden": [8]})
    algorithm = cls(hparams, Problem(suite=smooth, in_shape=(1,), out_features=1), generator("imaml")).double()
    batch = sine_batch(tasks=2, n=5)
    batch = type(batch)(batch.support_x.double(), batch.support_y.double(), batch.query_x.double(),
                        batch.query_y.double())
    algorithm.zero_grad(set_to_none=True)
    algorithm.accumulate_meta_gradient(batch)
    implicit = {n: p.grad.clone() for n, p in algorithm.backbone.named_parameters()}

    # Reference: differentiate through the same regularised steps, anchored at the live initialisation.
    meta = algorithm.backbone.params()
    names = algorithm.adapted_names
    params = per_task(meta, len(batch), names)
    anchor = dict(params)
    for _ in range(hparams.inner_steps):
        loss = algorithm.problem.loss(algorithm.backbone.functional(params, batch.support_x), batch.support_y)
        loss = loss + 0.5 * hparams.regularization * sum((params[n] - anchor[n]).pow(2).flatten(1).sum(1) for n in names)
        grads = torch.autograd.grad(loss.sum(), [params[n] for n in names], create_graph=True)
        params = {**params, **{n: params[n] - hparams.inner_lr * g for n, g in zip(names, grads, strict=True)}}
    query = algorithm.problem.loss(algorithm.backbone.functional(params, batch.query_x), batch.query_y).mean()
    unrolled = dict(zip(meta, torch.autograd.grad(query, list(meta.values())), strict=True))
    for name in implicit:
        torch.testing.assert_close(implicit[name], unrolled[name], rtol=1e-5, atol=1e-7)


def test_a_stronger_proximal_term_keeps_the_adapted_weights_nearer_the_start():
    cls = ALGORITHMS.get("imaml")
    batch = sine_batch()
    distances = []
    for strength in (0.1, 10.0):
        algorithm = cls(cls.Hparams(inner_lr=0.01, inner_steps=5, regularization=strength), sine_problem(),
                        generator("imaml"))
        before = {n: p.detach().clone() for n, p in algorithm.backbone.named_parameters()}
        params = {k: v.clone().requires_grad_(True) for k, v in per_task(before, len(batch)).items()}
        adapted = algorithm.adapt(batch, params, 5, create_graph=False)
        distances.append(sum((adapted[n] - params[n]).pow(2).sum() for n in before))
        values = algorithm.evaluate(batch, 5)
        assert values.shape == (len(batch),) and torch.isfinite(values).all()
        assert all(torch.equal(before[n], p) for n, p in algorithm.backbone.named_parameters())
    assert 0 < distances[1] < distances[0]
