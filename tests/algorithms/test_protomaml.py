"""ProtoMAML: its initial head is the prototypical classifier, and the meta-gradient flows through it."""

from __future__ import annotations

import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.protonet import class_means
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def build(**hparams):
    cls = ALGORITHMS.get("protomaml")
    return cls(cls.Hparams(**hparams), synthetic_problem(), generator("protomaml"))


def test_with_no_inner_step_it_scores_as_protonet_up_to_a_constant_per_query():
    algorithm = build()
    batch = synthetic_batch(tasks=2, queries=3)
    params = algorithm.prototype_head(batch, algorithm.backbone.params() | {})
    logits = algorithm.backbone.head(params, algorithm.backbone.features(params, batch.query_x))
    support = algorithm.backbone.features(algorithm.backbone.params(), batch.support_x)
    query = algorithm.backbone.features(algorithm.backbone.params(), batch.query_x)
    protonet = -torch.cdist(query, class_means(support, batch.support_y, 5)).pow(2)
    difference = logits - protonet  # |q|^2, the same for every class
    torch.testing.assert_close(difference, difference[..., :1].expand_as(difference), rtol=1e-4, atol=1e-3)
    assert torch.equal(logits.argmax(-1), protonet.argmax(-1))


def test_the_meta_gradient_reaches_the_body_through_the_prototypes_and_the_old_head_gets_none():
    algorithm = build(inner_steps=1)
    loss = algorithm.meta_loss(synthetic_batch(tasks=2))
    loss.backward()
    weight_name, bias_name = algorithm.backbone.head_names
    grads = {name: p.grad for name, p in algorithm.backbone.named_parameters()}
    assert grads[weight_name] is None and grads[bias_name] is None  # replaced by the prototypes for every task
    # (a convolution's bias before batch norm cancels out, so its gradient is ~0: the weights are checked)
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in grads if n.endswith("conv.weight"))
