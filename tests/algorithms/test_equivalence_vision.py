"""Grouped-convolution MAML on Conv-4 against learn2learn's per-task loop, in float64."""

from __future__ import annotations

import os

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator

pytest.importorskip("learn2learn")
pytestmark = pytest.mark.skipif(not os.environ.get("BENCH_DATA_DIR"), reason="needs BENCH_DATA_DIR with Omniglot")


@pytest.fixture(scope="module")
def episode_batch():
    suite = load_suite("omniglot-5w1s", tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    batch = episodes.train(seed=0, iteration=0)
    return suite, episodes.source, type(batch)(*(t.double() if t.is_floating_point() else t for t in batch.tensors()))


def meta_gradients(name, suite, source, batch, **hparams):
    algorithm_cls = ALGORITHMS.get(name)
    algorithm = algorithm_cls(algorithm_cls.Hparams(**hparams), problem_for(suite, source), generator("equivalence"))
    algorithm.double()
    algorithm.zero_grad()
    algorithm.meta_loss(batch).backward()
    return algorithm, {k: p.grad for k, p in algorithm.backbone.named_parameters()}


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_grouped_conv_maml_matches_learn2learn_per_task_on_conv4(episode_batch, inner_steps):
    """Per-task batch statistics in the grouped path must equal running each task alone."""
    suite, source, batch = episode_batch
    hparams = dict(inner_lr=0.4, inner_steps=inner_steps)
    _, ours = meta_gradients("maml", suite, source, batch, **hparams)
    _, reference = meta_gradients("maml.l2l", suite, source, batch, **hparams)
    assert set(ours) == set(reference)
    worst = max((ours[k] - reference[k]).abs().max().item() for k in ours)
    assert worst <= 1e-10, worst
    # Every block gets a meta-gradient, but for the first convolution's bias, which batch norm removes:
    # its true gradient is 0, which our folded first block gives exactly and learn2learn as rounding.
    assert all(ours[k].abs().max() > 0 or reference[k].abs().max() < 1e-12 for k in ours)


def test_learn2learn_metasgd_adapts_every_conv4_parameter(episode_batch):
    """Measured: l2l's MetaSGD leaves 16 of 36 OmniglotCNN meta-parameters without gradient, because that
    model registers its conv block twice. Our Conv-4 registers each parameter once: all get gradients,
    and the meta-gradients equal our Meta-SGD's."""
    suite, source, batch = episode_batch
    reference, reference_grads = meta_gradients("metasgd.l2l", suite, source, batch, inner_lr=0.1)
    # Every meta-parameter and learned rate gets a gradient but the first convolution's bias and its rate:
    # batch norm removes that bias, so their true gradient is 0, which our folded first block gives exactly.
    removed = "blocks.0.conv.bias"
    module_grads = {n: p.grad for n, p in reference.backbone.named_parameters()}
    rate_grads = dict(zip(module_grads, (p.grad for p in reference.learner.lrs), strict=True))
    for grads in (module_grads, rate_grads):
        assert all(g is not None and bool(g.abs().max() > 0) != (n == removed) for n, g in grads.items())
    _, ours = meta_gradients("metasgd", suite, source, batch, lr_init_low=0.1, lr_init_high=0.1)
    assert max((ours[k] - reference_grads[k]).abs().max().item() for k in ours) <= 1e-10


def test_the_learn2learn_omniglotcnn_metasgd_trap_is_real():
    """Pins the trap itself, so that a learn2learn upgrade that fixes it is noticed."""
    import learn2learn as l2l

    model = l2l.vision.models.OmniglotCNN(output_size=5)
    meta = l2l.algorithms.MetaSGD(model, lr=0.1)
    learner = meta.clone()
    x, y = torch.randn(10, 1, 28, 28), torch.arange(5).repeat(2)
    learner.adapt(torch.nn.functional.cross_entropy(learner(x), y))
    torch.nn.functional.cross_entropy(learner(x), y).backward()
    without = [n for n, p in meta.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert len(list(meta.parameters())) == 36 and len(without) == 16
