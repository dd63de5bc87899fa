"""The shared classifier heads: scikit-learn's logistic regression on one task's support features."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms.heads import logistic_regression_scores
from bench.errors import BenchError
from bench.seeding import generator


def features(ways: int, per_class: int):
    gen = generator("heads", ways)
    labels = torch.arange(ways).repeat_interleave(per_class)
    x = torch.randn(ways * per_class, 8, generator=gen) + 2.0 * torch.nn.functional.one_hot(labels, 8)
    return x, labels


@pytest.mark.parametrize("ways", [2, 5])
def test_scores_have_one_column_per_class_and_predict_as_scikit_learn_does(ways):
    from sklearn.linear_model import LogisticRegression

    support, labels = features(ways, 3)
    query, _ = features(ways, 4)
    scores = logistic_regression_scores("test", support, labels, query, ways, 1.0, 100)
    reference = LogisticRegression(C=1.0, max_iter=100).fit(support.double().numpy(), labels.numpy())
    expected = reference.predict(query.double().numpy())
    assert scores.shape == (len(query), ways) and scores.dtype == query.dtype
    assert scores.argmax(-1).tolist() == expected.tolist()


def test_a_support_set_missing_a_class_is_refused():
    support, labels = features(3, 2)
    with pytest.raises(BenchError, match="rfs: a support set without every one of its 4 classes"):
        logistic_regression_scores("rfs", support, labels, support, 4, 1.0, 100)
