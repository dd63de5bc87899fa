"""Batch-norm modes: transductive (each episode's statistics) and inductive (its support set's only).

In the inductive mode no query's prediction may depend on the other queries: the tests change the
other queries and check that the first query's scores stay the same, and that in the
transductive mode they do not (so the check can fail).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from bench.algorithms import ALGORITHMS, Problem
from bench.config import load_suite
from bench.errors import BenchError
from bench.models.conv4 import Conv4
from bench.models.resnet12 import ResNet12
from bench.run.runner import resolve_algorithms
from bench.seeding import generator
from tests.algorithms.test_classification import CLASSIFICATION, synthetic_batch  # the image classifiers


def omniglot(batch_norm: str):
    return load_suite("omniglot-5w1s", tier="smoke", overrides={"batch_norm": batch_norm})


class RawScores(Problem):
    """A problem whose 'metric' is the query scores themselves, so ``evaluate`` returns them."""

    def metric(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return prediction


def build(name: str, batch_norm: str, problem_cls: type[Problem] = Problem):
    suite = omniglot(batch_norm)
    problem = problem_cls(suite=suite, in_shape=(1, 28, 28), out_features=5, n_train_classes=12)
    algorithm = ALGORITHMS.get(name)
    return algorithm(algorithm.Hparams(**suite.algorithms.get(name, {})), problem, generator("test", name))


def other_queries_changed(batch):
    query_x = batch.query_x.clone()
    query_x[:, 1:] = torch.rand(query_x[:, 1:].shape, generator=generator("other queries"))
    return dataclasses.replace(batch, query_x=query_x)


@pytest.mark.parametrize("model", ["conv4", "resnet12"])
def test_backbone_statistics_from_the_support_set(model):
    gen = generator("backbone", model)
    net = Conv4((3, 28, 28), 8, 5, gen) if model == "conv4" else ResNet12((3, 28, 28), (4, 4, 4, 4), 5, gen)
    x = torch.rand(2, 6, 3, 28, 28, generator=gen)
    changed = x.clone()
    changed[:, 3:] = torch.rand(changed[:, 3:].shape, generator=gen)
    params = net.params()
    # stats_from = n is the transductive computation, done by hand.
    assert torch.allclose(net.features(params, x, stats_from=6), net.features(params, x), atol=1e-5)
    # With the first 2 images as the support set, image 2's features ignore images 3-5 ...
    inductive = net.features(params, x, stats_from=2)[:, 2], net.features(params, changed, stats_from=2)[:, 2]
    assert torch.allclose(*inductive, atol=1e-6)
    # ... which transductive batch norm does not.
    transductive = net.features(params, x)[:, 2], net.features(params, changed)[:, 2]
    assert not torch.allclose(*transductive, atol=1e-3)


INDUCTIVE = [n for n in CLASSIFICATION if ALGORITHMS.get(n).inductive_batch_norm]


@pytest.mark.parametrize("name", INDUCTIVE)
def test_in_the_inductive_mode_a_query_ignores_the_other_queries(name):
    batch = synthetic_batch(tasks=2, queries=3)
    for mode in ("inductive", "transductive"):
        algorithm = build(name, mode, RawScores)
        first, second = (algorithm.evaluate(b, algorithm.evaluation_steps(3))[:, 0]
                         for b in (batch, other_queries_changed(batch)))
        if mode == "inductive":
            assert torch.allclose(first, second, atol=1e-5), f"{name}: query 0's scores moved with the other queries"
        else:
            assert not torch.allclose(first, second, atol=1e-4), f"{name}: transductive scores ignored the other queries"


@pytest.mark.parametrize("name", INDUCTIVE)
def test_every_inductive_algorithm_trains(name):
    algorithm = build(name, "inductive")
    before = {k: v.clone() for k, v in algorithm.state_dict().items()}
    loss = algorithm.meta_train_step(synthetic_batch(tasks=2), 0)
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in algorithm.state_dict().items())


def test_algorithms_without_an_inductive_mode_say_so():
    suite = omniglot("inductive")
    chosen, skipped = resolve_algorithms(suite, None)
    assert skipped["relationnet"] == "has no inductive batch-norm mode"
    assert "relationnet" not in {a.name for a in chosen} and "protonet" in {a.name for a in chosen}
    with pytest.raises(BenchError, match="does not apply .* has no inductive batch-norm mode"):
        resolve_algorithms(suite, ["relationnet"])


def test_the_mode_is_a_protocol_field():
    inductive, transductive = omniglot("inductive"), omniglot("transductive")
    assert inductive.protocol_fields()["batch_norm"] == "inductive"
    assert inductive.protocol_hash() != transductive.protocol_hash()
