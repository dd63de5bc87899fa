"""FEAT: its adapted prototypes are easyfsl's FEAT's with the same attention weights; dropout only while training."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.feat import SetAttention
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem
from tests.algorithms.test_transductive import episode


def easyfsl_attention(ours: SetAttention):
    modules = pytest.importorskip("easyfsl.modules")
    dim = ours.query.in_features
    theirs = modules.MultiHeadAttention(1, dim, dim, dim).double().eval()
    with torch.no_grad():
        for mine, their in ((ours.query, theirs.w_qs), (ours.key, theirs.w_ks), (ours.value, theirs.w_vs),
                            (ours.out, theirs.fc), (ours.norm, theirs.layer_norm)):
            their.weight.copy_(mine.weight)
            if mine.bias is not None:
                their.bias.copy_(mine.bias)
    return theirs


def test_the_adapted_prototypes_and_predictions_are_easyfsl_s_feat():
    methods = pytest.importorskip("easyfsl.methods")
    support, labels, query, _, _ = episode(3)
    attention = SetAttention(support.shape[1], generator("feat test")).double()
    theirs = methods.FEAT(torch.nn.Identity(), attention_module=easyfsl_attention(attention)).double().eval()
    theirs.process_support_set(support, labels)
    their_scores = theirs(query).detach()
    cls = ALGORITHMS.get("feat")
    algorithm = cls(cls.Hparams(), synthetic_problem(), generator("feat")).double()
    algorithm.attention = attention
    with torch.no_grad():
        prototypes = algorithm.adapted_prototypes(support[None], labels[None], 5, training=False)[0]
        ours = algorithm.scores(support[None], labels[None], query[None], 5)[0]
    torch.testing.assert_close(prototypes, theirs.prototypes, rtol=0, atol=1e-12)
    # easyfsl scores minus the distance; ours minus its square over the temperature: the same order
    torch.testing.assert_close(ours, -their_scores.pow(2) / algorithm.hparams.temperature, rtol=1e-12, atol=1e-12)


def test_dropout_acts_while_training_only_and_draws_from_the_run_s_generator():
    cls = ALGORITHMS.get("feat")
    algorithm = cls(cls.Hparams(), synthetic_problem(), generator("feat"))
    batch = synthetic_batch(tasks=2)
    first = algorithm.evaluate(batch, 0)
    state = torch.random.get_rng_state()
    algorithm.meta_loss(batch)
    assert torch.equal(state, torch.random.get_rng_state())
    support, _ = algorithm.embed_episode(algorithm.backbone.params(), batch)
    with torch.no_grad():
        a = algorithm.adapted_prototypes(support, batch.support_y, 5, training=True)
        b = algorithm.adapted_prototypes(support, batch.support_y, 5, training=True)
        c = algorithm.adapted_prototypes(support, batch.support_y, 5, training=False)
        d = algorithm.adapted_prototypes(support, batch.support_y, 5, training=False)
    assert not torch.equal(a, b) and torch.equal(c, d)
    assert torch.equal(first, algorithm.evaluate(batch, 0))


def test_the_regulariser_adds_to_the_loss_and_trains_the_attention():
    cls = ALGORITHMS.get("feat")
    batch = synthetic_batch(tasks=2, queries=3)
    losses = {}
    for balance in (0.0, 1.0):
        algorithm = cls(cls.Hparams(balance=balance, dropout=0.0), synthetic_problem(), generator("feat"))
        losses[balance] = algorithm.meta_loss(batch)
        losses[balance].backward()
        assert algorithm.attention.query.weight.grad.abs().sum() > 0
    assert losses[1.0] > losses[0.0]
