"""RFS: the reference code's test-time classifier on the same embeddings, one fit per task."""

from __future__ import annotations

import dataclasses

import torch

from bench.algorithms import ALGORITHMS, Problem
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


class Predictions(Problem):
    """A problem whose 'metric' is the predicted class of each query."""

    def metric(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return prediction.argmax(-1)


def test_each_task_s_predictions_are_the_reference_pipeline_s_on_its_normalised_features():
    from sklearn.linear_model import LogisticRegression

    rfs = ALGORITHMS.get("rfs")
    base = synthetic_problem()
    problem = Predictions(**{f.name: getattr(base, f.name) for f in dataclasses.fields(Problem)})
    algorithm = rfs(rfs.Hparams(), problem, generator("rfs"))
    batch = synthetic_batch(tasks=3, shots=2, queries=4)
    ours = algorithm.evaluate(batch, algorithm.evaluation_steps(10))
    support, query = algorithm.embed_episode(algorithm.backbone.params(), batch)
    for task in range(3):
        # eval/meta_eval.py of the RFS code: features divided by their L2 norm, then this classifier
        # (its penalty="l2" is scikit-learn's default, which 1.8 asks not to pass)
        normalise = lambda x: x / x.pow(2).sum(1, keepdim=True).pow(0.5)  # noqa: E731
        clf = LogisticRegression(random_state=0, C=1.0, solver="lbfgs", max_iter=1000)
        clf.fit(normalise(support[task].detach()).double().numpy(), batch.support_y[task].numpy())
        expected = clf.predict(normalise(query[task].detach()).double().numpy())
        assert ours[task].tolist() == expected.tolist()
    assert algorithm.evaluation_steps(10) == 0
