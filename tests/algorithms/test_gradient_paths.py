"""Every execution path of the gradient-based core against learn2learn's per-task loop, in float64.

The paths: per-task loop (task chunk 1), chunks of several tasks, every task in one grouped call,
and gradient checkpointing over the inner steps. Each must give learn2learn's meta-gradient to
1e-10 on Conv-4 with per-task batch statistics (Omniglot) and on the sine MLP.
"""

from __future__ import annotations

import os

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator

pytest.importorskip("learn2learn")

PATHS = [  # (task_chunk, checkpoint_inner_steps); None = every task of the batch in one call
    (1, False), (2, False), (None, False), (1, True), (None, True),
]


def as_float64(batch):
    return batch.map_tensors(lambda t: t.double() if t.is_floating_point() else t)  # the class indices too


@pytest.fixture(scope="module")
def omniglot():
    if not os.environ.get("BENCH_DATA_DIR"):
        pytest.skip("needs BENCH_DATA_DIR with Omniglot")
    suite = load_suite("omniglot-5w1s", tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    return suite, episodes.source, as_float64(episodes.train(seed=0, iteration=0))


@pytest.fixture(scope="module")
def sine():
    suite = load_suite("sine", tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    return suite, episodes.source, as_float64(episodes.train(seed=0, iteration=0))


def meta_gradients(name, suite, source, batch, task_chunk=None, checkpoint=False, **hparams):
    algorithm_cls = ALGORITHMS.get(name)
    algorithm = algorithm_cls(algorithm_cls.Hparams(**hparams), problem_for(suite, source), generator("equivalence"))
    algorithm.double()
    algorithm.zero_grad()
    if name.endswith(".l2l"):
        algorithm.meta_loss(batch).backward()
    else:
        algorithm.task_chunk = task_chunk
        if hasattr(algorithm, "checkpoint_inner_steps"):
            algorithm.checkpoint_inner_steps = checkpoint
        algorithm.accumulate_meta_gradient(batch)
    return algorithm, {k: p.grad.clone() for k, p in algorithm.named_parameters() if p.grad is not None}


def worst_difference(ours, reference):
    ours = {k.removeprefix("backbone."): v for k, v in ours.items() if k.startswith("backbone.")}
    reference = {k.removeprefix("backbone."): v for k, v in reference.items() if k.startswith("backbone.")}
    assert set(ours) == set(reference)
    # Every parameter gets a meta-gradient, but for a convolution bias that batch norm removes: its
    # true gradient is 0, which Conv-4's folded first block gives exactly and learn2learn as rounding.
    assert all(ours[k].abs().max() > 0 or reference[k].abs().max() < 1e-12 for k in ours)
    return max((ours[k] - reference[k]).abs().max().item() for k in ours)


@pytest.mark.parametrize(("task_chunk", "checkpoint"), PATHS)
@pytest.mark.parametrize(("inner_steps", "first_order"), [(1, False), (3, False), (2, True)])
def test_every_maml_path_matches_learn2learn_on_conv4(omniglot, task_chunk, checkpoint, inner_steps, first_order):
    hparams = dict(inner_lr=0.4, inner_steps=inner_steps, first_order=first_order)
    _, ours = meta_gradients("maml", *omniglot, task_chunk, checkpoint, **hparams)
    _, reference = meta_gradients("maml.l2l", *omniglot, **hparams)
    assert worst_difference(ours, reference) <= 1e-10


@pytest.mark.parametrize(("task_chunk", "checkpoint"), PATHS)
def test_every_maml_path_matches_learn2learn_on_the_sine_mlp(sine, task_chunk, checkpoint):
    hparams = dict(inner_lr=0.01, inner_steps=3)
    _, ours = meta_gradients("maml", *sine, task_chunk, checkpoint, **hparams)
    _, reference = meta_gradients("maml.l2l", *sine, **hparams)
    assert worst_difference(ours, reference) <= 1e-10


@pytest.mark.parametrize(("task_chunk", "checkpoint"), PATHS)
def test_every_metasgd_path_matches_learn2learn(sine, task_chunk, checkpoint):
    ours_algorithm, ours = meta_gradients("metasgd", *sine, task_chunk, checkpoint, inner_steps=2,
                                          lr_init_low=0.05, lr_init_high=0.05)
    reference_algorithm, reference = meta_gradients("metasgd.l2l", *sine, inner_steps=2, inner_lr=0.05)
    assert worst_difference(ours, reference) <= 1e-10
    ours_lrs = [ours_algorithm.learned_lrs[k.replace(".", "/")].grad for k, _ in ours_algorithm.backbone.named_parameters()]
    reference_lrs = [p.grad for p in reference_algorithm.learner.lrs]
    assert max((a - b).abs().max().item() for a, b in zip(ours_lrs, reference_lrs, strict=True)) <= 1e-10


@pytest.mark.parametrize("name", ["anil", "reptile", "transfer", "protonet", "matchingnet", "relationnet",
                                  "metaoptnet.ridge", "baseline", "baselinepp"])
def test_task_chunks_do_not_change_the_meta_gradient(omniglot, name):
    """Methods without a learn2learn counterpart: every chunk size gives the all-tasks-at-once gradient."""
    _, together = meta_gradients(name, *omniglot, None, False)
    for task_chunk in (1, 3):
        _, chunked = meta_gradients(name, *omniglot, task_chunk, name == "anil")
        assert set(chunked)
        assert set(chunked) == set(together)
        assert max((chunked[k] - together[k]).abs().max().item() for k in together) <= 1e-10


def test_checkpointing_keeps_less_of_the_graph(omniglot):
    """With checkpointing, the saved tensors of the inner steps are not alive before the outer backward."""
    suite, source, batch = omniglot

    def saved_bytes(checkpoint: bool) -> int:
        algorithm_cls = ALGORITHMS.get("maml")
        algorithm = algorithm_cls(algorithm_cls.Hparams(inner_steps=5), problem_for(suite, source), generator("equivalence"))
        algorithm.double()
        algorithm.checkpoint_inner_steps = checkpoint
        total = 0

        def pack(tensor):
            nonlocal total
            total += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            algorithm.meta_loss(batch)
        return total

    assert saved_bytes(True) < saved_bytes(False) / 2
