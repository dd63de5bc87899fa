"""Our batched gradient-based core against learn2learn's per-task reference, in float64."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator
from bench.tasks import make_task_source

pytest.importorskip("learn2learn")


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def meta_gradients(name, suite, batch, **hparams):
    algorithm_cls = ALGORITHMS.get(name)
    problem = problem_for(suite, make_task_source(suite))
    algorithm = algorithm_cls(algorithm_cls.Hparams(**hparams), problem, generator("equivalence"))
    algorithm.zero_grad()
    algorithm.meta_loss(batch).backward()
    return algorithm, {k: p.grad for k, p in algorithm.backbone.named_parameters()}


@pytest.mark.parametrize("inner_steps", [1, 3])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_meta_gradient_matches_learn2learn(float64, inner_steps, first_order):
    suite = load_suite("sine", tier="smoke")
    batch = Episodes(suite, torch.device("cpu")).train(seed=0, iteration=0)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    hparams = dict(inner_lr=0.01, inner_steps=inner_steps, first_order=first_order)
    ours, ours_grads = meta_gradients("maml", suite, batch, **hparams)
    reference, reference_grads = meta_gradients("maml.l2l", suite, batch, **hparams)
    for name, p in ours.backbone.named_parameters():
        assert torch.equal(p, dict(reference.backbone.named_parameters())[name])  # same weights
    worst = max((ours_grads[k] - reference_grads[k]).abs().max().item() for k in ours_grads)
    assert worst <= 1e-10
    assert max(g.abs().max().item() for g in ours_grads.values()) > 1e-3  # the gradients are not trivially zero


def test_first_order_and_second_order_differ(float64):
    suite = load_suite("sine", tier="smoke")
    batch = Episodes(suite, torch.device("cpu")).train(seed=0, iteration=0)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    _, second = meta_gradients("maml", suite, batch, inner_steps=2, inner_lr=0.1)
    _, first = meta_gradients("maml", suite, batch, inner_steps=2, inner_lr=0.1, first_order=True)
    assert max((second[k] - first[k]).abs().max().item() for k in first) > 1e-4


def test_metasgd_meta_gradient_matches_learn2learn(float64):
    suite = load_suite("sine", tier="smoke")
    batch = Episodes(suite, torch.device("cpu")).train(seed=0, iteration=0)
    batch = type(batch)(*(t.double() for t in batch.tensors()))
    ours, ours_grads = meta_gradients("metasgd", suite, batch, inner_steps=2, lr_init_low=0.05, lr_init_high=0.05)
    reference, reference_grads = meta_gradients("metasgd.l2l", suite, batch, inner_steps=2, inner_lr=0.05)
    worst = max((ours_grads[k] - reference_grads[k]).abs().max().item() for k in ours_grads)
    assert worst <= 1e-10
    reference_lr_grads = [p.grad for p in reference.learner.lrs]
    ours_lr_grads = [ours.learned_lrs[k.replace(".", "/")].grad for k, _ in ours.backbone.named_parameters()]
    assert max((a - b).abs().max().item() for a, b in zip(ours_lr_grads, reference_lr_grads, strict=True)) <= 1e-10
