"""Meta-Baseline: the classifier stage, then the episodic cosine stage, within one budget."""

from __future__ import annotations

import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.metabaseline import cosine_scores
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def test_the_budget_is_split_between_the_classifier_stage_and_the_meta_stage():
    cls = ALGORITHMS.get("metabaseline")
    problem = synthetic_problem()  # the smoke tier's meta-iterations
    algorithm = cls(cls.Hparams(pretrain_fraction=0.5), problem, generator("metabaseline"))
    assert algorithm.pretrain_iterations == round(0.5 * problem.suite.meta_iterations) > 0
    batch = synthetic_batch(tasks=2)

    def snapshot():
        return {k: v.detach().clone() for k, v in algorithm.named_parameters()}

    before = snapshot()
    algorithm.meta_train_step(batch, 0)  # classifier stage: the temperature is not used, so not moved
    after_pretrain = snapshot()
    assert torch.equal(after_pretrain["temperature"], before["temperature"])
    assert not torch.equal(after_pretrain["classifier_weight"], before["classifier_weight"])
    algorithm.meta_train_step(batch, algorithm.pretrain_iterations)  # meta stage: the classifier rests
    after_meta = snapshot()
    assert torch.equal(after_meta["classifier_weight"], after_pretrain["classifier_weight"])
    assert not torch.equal(after_meta["temperature"], after_pretrain["temperature"])
    assert algorithm.evaluation_steps(10) == 0


def test_scores_are_the_temperature_times_the_cosine_to_each_class_mean():
    gen = generator("metabaseline", "scores")
    support, query = torch.randn(1, 6, 4, generator=gen), torch.randn(1, 3, 4, generator=gen)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2]])
    scores = cosine_scores(support, labels, query, 3, torch.tensor(10.0))
    means = torch.stack([support[0, labels[0] == c].mean(0) for c in range(3)])
    expected = 10.0 * torch.nn.functional.cosine_similarity(query[0, :, None], means[None], dim=-1)
    torch.testing.assert_close(scores[0], expected)
