"""BOIL: the inner loop moves the body only; the outer loop still learns the head."""

from __future__ import annotations

import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.gradient import per_task
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def test_the_inner_loop_changes_the_body_and_leaves_the_head_as_it_was():
    cls = ALGORITHMS.get("boil")
    algorithm = cls(cls.Hparams(inner_lr=0.5, inner_steps=2), synthetic_problem(), generator("boil"))
    batch = synthetic_batch(tasks=2)
    params = per_task(algorithm.backbone.params(), len(batch), algorithm.adapted_names)
    adapted = algorithm.adapt(batch, params, 2, create_graph=False)
    weight_name, bias_name = algorithm.backbone.head_names
    assert weight_name not in algorithm.adapted_names and bias_name not in algorithm.adapted_names
    assert torch.equal(adapted[weight_name], params[weight_name]) and torch.equal(adapted[bias_name], params[bias_name])
    assert not torch.equal(adapted["blocks.0.conv.weight"], params["blocks.0.conv.weight"])
    before = algorithm.backbone.params()[weight_name].detach().clone()
    algorithm.meta_train_step(batch, 0)
    assert not torch.equal(algorithm.backbone.params()[weight_name], before)  # the outer loop learns the head
