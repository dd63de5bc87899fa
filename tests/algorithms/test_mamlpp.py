"""MAML++: its loss schedule, and each of its changes reduces to MAML where it is switched off."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.mamlpp import step_loss_weights
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def build(name: str, **hparams):
    cls = ALGORITHMS.get(name)
    algorithm = cls(cls.Hparams(**hparams), synthetic_problem(), generator("mamlpp test")).double()
    return algorithm


def meta_gradient(algorithm, batch, iteration: int = 0) -> dict[str, torch.Tensor]:
    algorithm.zero_grad(set_to_none=True)
    if hasattr(algorithm, "iteration"):
        algorithm.iteration = iteration
    algorithm.accumulate_meta_gradient(batch)
    return {name: param.grad.clone() for name, param in algorithm.backbone.named_parameters()}


def double_batch(tasks: int = 2):
    batch = synthetic_batch(tasks=tasks)
    return type(batch)(batch.support_x.double(), batch.support_y, batch.query_x.double(), batch.query_y,
                       support_classes=batch.support_classes, query_classes=batch.query_classes)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_the_step_weights_start_uniform_sum_to_one_and_end_on_the_last_step(steps):
    assert step_loss_weights(steps, 0, 100) == pytest.approx([1 / steps] * steps)
    for iteration in (0, 10, 50, 99, 100, 500):
        weights = step_loss_weights(steps, iteration, 100)
        assert sum(weights) == pytest.approx(1.0) and min(weights) >= 0
        if steps > 1 and iteration < 100:
            assert min(weights[:-1]) >= 0.03 / steps - 1e-12  # the paper's floor for the earlier steps
    assert step_loss_weights(steps, 100, 100) == [0.0] * (steps - 1) + [1.0]
    assert step_loss_weights(steps, 0, 0) == [0.0] * (steps - 1) + [1.0]  # no annealing: the last step alone


def test_with_every_change_off_the_meta_gradient_is_maml_s():
    off = {"multi_step_loss_share": 0.0, "first_order_share": 0.0, "learn_step_sizes": False}
    batch = double_batch()
    ours = meta_gradient(build("mamlpp", inner_lr=0.25, inner_steps=2, **off), batch)
    maml = meta_gradient(build("maml", inner_lr=0.25, inner_steps=2), batch)
    for name in maml:
        torch.testing.assert_close(ours[name], maml[name], rtol=1e-10, atol=1e-12)


def test_derivative_order_annealing_is_first_order_then_second_order():
    algorithm = build("mamlpp", inner_lr=0.25, inner_steps=2, multi_step_loss_share=0.0, first_order_share=0.5,
                      learn_step_sizes=False)
    assert algorithm.first_order_iterations == round(0.5 * algorithm.problem.suite.meta_iterations) > 0
    batch = double_batch()
    first = meta_gradient(build("maml", inner_lr=0.25, inner_steps=2, first_order=True), batch)
    second = meta_gradient(build("maml", inner_lr=0.25, inner_steps=2), batch)
    early = meta_gradient(algorithm, batch, iteration=0)
    late = meta_gradient(algorithm, batch, iteration=algorithm.first_order_iterations)
    for name in first:
        torch.testing.assert_close(early[name], first[name], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(late[name], second[name], rtol=1e-10, atol=1e-12)
    assert any(not torch.allclose(first[name], second[name]) for name in first)  # the two orders differ here


def test_the_multi_step_loss_weighs_every_step_s_query_loss():
    algorithm = build("mamlpp", inner_lr=0.25, inner_steps=2, multi_step_loss_share=0.5, first_order_share=0.0)
    batch = double_batch()
    algorithm.iteration = 0
    params = {k: v.unsqueeze(0).expand(len(batch), *v.shape) for k, v in algorithm.backbone.params().items()}
    per_step = [algorithm.problem.loss(algorithm.query_predictions(batch, adapted), batch.query_y).mean()
                for adapted in algorithm.adapted_sequence(batch, params, 2, create_graph=True)]
    torch.testing.assert_close(algorithm.meta_loss(batch), (per_step[0] + per_step[1]) / 2)
    algorithm.iteration = algorithm.annealed_iterations
    torch.testing.assert_close(algorithm.meta_loss(batch), per_step[1])


def test_the_step_sizes_are_learned_per_tensor_and_step_and_used_at_test_time():
    algorithm = build("mamlpp", inner_lr=0.25, inner_steps=2)
    before = {name: rate.detach().clone() for name, rate in algorithm.step_sizes.items()}
    assert set(before) == {name.replace(".", "/") for name in algorithm.adapted_names}
    assert all(rate.shape == (2,) and torch.allclose(rate, torch.full_like(rate, 0.25)) for rate in before.values())
    algorithm.meta_train_step(double_batch(), 0)
    changed = {name for name in before if not torch.equal(algorithm.step_sizes[name], before[name])}
    # A convolution bias followed by batch norm changes no output, so its step size has no gradient.
    assert changed == {name for name in before if not name.endswith("conv/bias")}
    assert algorithm.evaluation_steps(10) == 2
    with pytest.raises(ValueError, match="2 inner steps, not 3"):
        algorithm.adapt(double_batch(), algorithm.backbone.params(), 3, create_graph=False)
