"""TIM and LaplacianShot: easyfsl's predictions on the same embeddings, tasks run together as alone,
and the transductive protocol keeps them out of inductive tables (and inductive methods out of theirs)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.algorithms import ALGORITHMS
from bench.algorithms.laplacianshot import LaplacianShotHparams, laplacian_assignments, rectified_prototypes
from bench.algorithms.simpleshot import transformed
from bench.algorithms.tim import TIMHparams, information_maximization_scores
from bench.config import load_suite
from bench.seeding import generator

WAYS = 5


def episode(seed: int, shots: int = 3, queries: int = 7, dim: int = 16, noise: float = 2.0):
    """Features with a class structure, noisy enough that transduction changes predictions."""
    gen = generator("transductive", seed)
    labels = torch.arange(WAYS).repeat_interleave(shots)
    query_labels = torch.arange(WAYS).repeat_interleave(queries)
    means = 2 * torch.randn(WAYS, dim, generator=gen, dtype=torch.float64)
    support = means[labels] + noise * torch.randn(WAYS * shots, dim, generator=gen, dtype=torch.float64)
    query = means[query_labels] + noise * torch.randn(WAYS * queries, dim, generator=gen, dtype=torch.float64)
    centre = torch.randn(dim, generator=gen, dtype=torch.float64)
    return support, labels, query, query_labels, centre


def easyfsl_predictions(method: str, support, labels, query, centre, **options) -> torch.Tensor:
    methods = pytest.importorskip("easyfsl.methods")
    model = getattr(methods, method)(torch.nn.Identity(), feature_centering=centre, feature_normalization=2, **options)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # easyfsl's LaplacianShot builds its graph in the default dtype
    try:
        model.process_support_set(support, labels)
        return model(query).detach()
    finally:
        torch.set_default_dtype(previous)


def ours(method: str, episodes, hparams):
    """Our scores for several episodes at once (one batch), after CL2N with each episode's centre."""
    support = torch.stack([e[0] for e in episodes])
    labels = torch.stack([e[1] for e in episodes])
    query = torch.stack([e[2] for e in episodes])
    centres = torch.stack([e[4] for e in episodes]).unsqueeze(1)
    support, query = transformed(support, query, centres, True)
    if method == "TIM":
        return information_maximization_scores(support, labels, query, WAYS, hparams)
    prototypes = rectified_prototypes(support, labels, query, WAYS)
    return laplacian_assignments(query, prototypes, hparams.knn, hparams.lambda_regularization, hparams.inference_steps)


@pytest.mark.parametrize("method", ["TIM", "LaplacianShot"])
def test_our_predictions_are_easyfsl_s_on_the_same_embeddings_for_every_task_of_a_batch(method):
    hparams = TIMHparams() if method == "TIM" else LaplacianShotHparams()
    episodes = [episode(seed) for seed in range(4)]
    scores = ours(method, episodes, hparams)
    changed = 0
    for task, (support, labels, query, _, centre) in enumerate(episodes):
        theirs = easyfsl_predictions(method, support, labels, query, centre)
        torch.testing.assert_close(scores[task], theirs, rtol=0, atol=1e-9)
        assert torch.equal(scores[task].argmax(-1), theirs.argmax(-1))
        plain = F.normalize(query - centre, dim=-1) @ F.normalize(
            torch.stack([F.normalize(support - centre, dim=-1)[labels == c].mean(0) for c in range(WAYS)]), dim=-1).T
        changed += int((plain.argmax(-1) != scores[task].argmax(-1)).sum())
    assert changed > 0  # the transductive step changed some predictions, so the comparison says something


def test_tim_with_more_steps_is_still_easyfsl_s_and_moves_further():
    hparams = TIMHparams(steps=200, step_lr=1e-3)
    support, labels, query, _, centre = episode(7)
    theirs = easyfsl_predictions("TIM", support, labels, query, centre, fine_tuning_steps=200, fine_tuning_lr=1e-3)
    torch.testing.assert_close(ours("TIM", [episode(7)], hparams)[0], theirs, rtol=0, atol=1e-9)


def test_laplacianshot_tasks_stop_on_their_own_bound_as_alone():
    hparams = LaplacianShotHparams(inference_steps=50)
    episodes = [episode(seed, noise=noise) for seed, noise in ((0, 0.5), (1, 3.0), (2, 1.0))]
    together = ours("LaplacianShot", episodes, hparams)
    for task, one in enumerate(episodes):
        torch.testing.assert_close(together[task], ours("LaplacianShot", [one], hparams)[0], rtol=0, atol=1e-12)


def test_transductive_methods_run_only_under_transductive_inference_and_alone():
    inductive = load_suite("omniglot-5w1s", tier="smoke")
    transductive = load_suite("omniglot-5w1s-transductive", tier="smoke")
    assert transductive.inference == "transductive" and inductive.inference == "inductive"
    assert transductive.protocol_hash() != inductive.protocol_hash()
    assert "inference" not in inductive.protocol_fields()  # inductive protocols keep the hash they had
    for name in ("tim", "laplacianshot"):
        assert "transductive" in ALGORITHMS.get(name).inapplicable(inductive)
        assert ALGORITHMS.get(name).applies_to(transductive)
    for name in ("protonet", "simpleshot", "maml"):
        assert ALGORITHMS.get(name).applies_to(inductive)
        assert "inductive" in ALGORITHMS.get(name).inapplicable(transductive)


def test_tim_and_laplacianshot_score_a_batch_of_real_shaped_episodes():
    from tests.algorithms.test_classification import synthetic_batch, synthetic_problem
    for name in ("tim", "laplacianshot"):
        cls = ALGORITHMS.get(name)
        algorithm = cls(cls.Hparams(), synthetic_problem(), generator(name))
        batch = synthetic_batch(tasks=3, queries=4)
        values = algorithm.evaluate(batch, 0)
        assert values.shape == (3,) and torch.isfinite(values).all()


def test_tim_without_steps_and_laplacianshot_without_a_graph_reduce_to_nearest_centroid():
    """TIM with no step scores by the cosine to the class means (SimpleShot's cosine); LaplacianShot with
    lambda 0 assigns each query to its nearest (rectified) prototype."""
    support, labels, query, _, centre = episode(5)
    s, q = transformed(support[None], query[None], centre, True)
    from bench.algorithms.simpleshot import nearest_centroid_scores
    simpleshot = nearest_centroid_scores(support[None], labels[None], query[None], WAYS, centre, True, "cosine")
    torch.testing.assert_close(information_maximization_scores(s, labels[None], q, WAYS, TIMHparams(steps=0)),
                               simpleshot, rtol=0, atol=1e-12)
    prototypes = rectified_prototypes(s, labels[None], q, WAYS)
    assignments = laplacian_assignments(q, prototypes, 3, 0.0, 5)
    assert torch.equal(assignments.argmax(-1), torch.cdist(q, prototypes).argmin(-1))
