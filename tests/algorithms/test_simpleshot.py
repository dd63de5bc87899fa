"""SimpleShot: the same predictions as easyfsl's on the same embeddings, and its CL2N mean is the training features'."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.algorithms import ALGORITHMS
from bench.algorithms.simpleshot import nearest_centroid_scores
from bench.seeding import generator
from tests.algorithms.test_classification import synthetic_batch, synthetic_problem


def embeddings(ways: int = 5, shots: int = 3, queries: int = 7, dim: int = 16):
    gen = generator("simpleshot", "embeddings")
    labels = torch.arange(ways).repeat_interleave(shots)
    support = torch.randn(ways * shots, dim, generator=gen, dtype=torch.float64) + 3 * F.one_hot(labels, dim).double()
    query_labels = torch.arange(ways).repeat_interleave(queries)
    query = torch.randn(ways * queries, dim, generator=gen, dtype=torch.float64) + 3 * F.one_hot(query_labels, dim).double()
    centre = torch.randn(dim, generator=gen, dtype=torch.float64)
    return support, labels, query, centre


@pytest.mark.parametrize(("easyfsl_method", "distance"), [("SimpleShot", "cosine"), ("PrototypicalNetworks", "euclidean")])
def test_our_scores_are_easyfsl_s_on_the_same_centred_normalised_embeddings(easyfsl_method, distance):
    methods = pytest.importorskip("easyfsl.methods")
    support, labels, query, centre = embeddings()
    theirs_model = getattr(methods, easyfsl_method)(torch.nn.Identity(), feature_centering=centre, feature_normalization=2)
    theirs_model.process_support_set(support, labels)
    theirs = theirs_model(query)
    ours = nearest_centroid_scores(support[None], labels[None], query[None], 5, centre, True, distance)[0]
    # easyfsl's PrototypicalNetworks scores minus the distance itself, not squared, as SimpleShot's paper does
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_the_transform_matters_and_uncentred_unnormalised_is_plain_nearest_centroid():
    support, labels, query, centre = embeddings()
    plain = nearest_centroid_scores(support[None], labels[None], query[None], 5, None, False, "euclidean")[0]
    centroids = torch.stack([support[labels == c].mean(0) for c in range(5)])
    torch.testing.assert_close(plain, -torch.cdist(query, centroids), rtol=0, atol=1e-12)
    cl2n = nearest_centroid_scores(support[None], labels[None], query[None], 5, centre * 10, True, "euclidean")[0]
    assert not torch.allclose(plain, cl2n)


def test_the_cl2n_mean_follows_the_training_features_and_is_part_of_the_selected_state():
    algorithm_cls = ALGORITHMS.get("simpleshot")
    algorithm = algorithm_cls(algorithm_cls.Hparams(mean_decay=0.0), synthetic_problem(), generator("simpleshot"))
    batch = synthetic_batch(tasks=2)
    assert torch.equal(algorithm.base_mean(), torch.zeros_like(algorithm.base_mean()))  # CL2N is L2N before training
    algorithm.meta_train_step(batch, 0)
    # decay 0: the mean is exactly the last meta-batch's mean feature, under the weights before the step
    assert "feature_sum" in algorithm.state_dict() and algorithm.weight_sum.item() == 1.0
    before = algorithm_cls(algorithm_cls.Hparams(mean_decay=0.0), synthetic_problem(), generator("simpleshot"))
    x = torch.cat([batch.support_x, batch.query_x], dim=1)
    expected = before.backbone.features(before.backbone.params(), x).flatten(0, 1).mean(0)
    torch.testing.assert_close(algorithm.base_mean(), expected.detach())
    assert algorithm.evaluation_steps(10) == 0
    # one update per meta-batch whatever the speed choice: task chunks would update it per chunk
    assert not algorithm_cls.chunks_tasks() and ALGORITHMS.get("baseline").chunks_tasks()
