"""Classification algorithms: every one must learn Omniglot 5-way 1-shot at the smoke tier; unit
tests of the Matching, Relation, MetaOptNet and Baseline heads on synthetic episodes."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bench.algorithms import ALGORITHMS, Problem
from bench.algorithms.baseline import Baseline
from bench.algorithms.matchingnet import matching_log_probs
from bench.algorithms.metaoptnet import (
    crammer_singer_dual,
    largest_eigenvalue_bound,
    ridge_logits,
    simplex_projection,
    svm_logits,
)
from bench.config import load_suite
from bench.errors import BenchError
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator
from bench.tasks import TaskBatch

# The image classifiers: those that apply to Omniglot. The floor (nearest centroid on frozen sentence
# embeddings) and the per-support-set text baselines (finetune, setfit, which need a pre-trained
# sentence encoder) are tested with the text suites (tests/algorithms/test_sentence.py).
CLASSIFICATION = [n for n in ALGORITHMS.names()
                  if "classification" in ALGORITHMS.get(n).task_types
                  and ALGORITHMS.get(n).applies_to(load_suite("omniglot-5w1s", tier="smoke"))]
NEW = ["matchingnet", "relationnet", "metaoptnet.ridge", "metaoptnet.svm", "baseline", "baselinepp"]
OMNIGLOT = Path(os.environ.get("BENCH_DATA_DIR", "")) / "omniglot" / "splits" / "vinyals"
needs_omniglot = pytest.mark.skipif(not (OMNIGLOT / "train.txt").is_file(), reason="BENCH_DATA_DIR has no Omniglot")


def synthetic_problem(n_train_classes: int | None = 12) -> Problem:
    """Omniglot-shaped problem without touching the data (loading a suite only parses its file)."""
    return Problem(suite=load_suite("omniglot-5w1s", tier="smoke"), in_shape=(1, 28, 28), out_features=5,
                   n_train_classes=n_train_classes)


def synthetic_batch(tasks: int = 2, ways: int = 5, shots: int = 1, queries: int = 2) -> TaskBatch:
    """Random images with the layout of ImageTasks' episodes (class by class)."""
    gen = generator("synthetic batch", tasks, ways, shots, queries)
    labels = torch.arange(ways)

    def split(k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = torch.rand(tasks, ways * k, 1, 28, 28, generator=gen)
        y = labels.repeat_interleave(k).expand(tasks, -1)
        return x, y, (y + 3 * torch.arange(tasks).unsqueeze(1)) % 12

    support_x, support_y, support_classes = split(shots)
    query_x, query_y, query_classes = split(queries)
    return TaskBatch(support_x, support_y, query_x, query_y, support_classes=support_classes,
                     query_classes=query_classes)


def build(name: str, problem: Problem, **hparams):
    algorithm = ALGORITHMS.get(name)
    values = {**problem.suite.algorithms.get(name, {}), **hparams}
    return algorithm(algorithm.Hparams(**values), problem, generator("test", name))


# Learning on Omniglot ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def omniglot():
    suite = load_suite("omniglot-5w1s", tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    return suite, episodes, problem_for(suite, episodes.source)


# learn2learn's wrappers (*.l2l) are left out: tests/algorithms/test_equivalence*.py hold their
# meta-gradients equal to ours in float64, so ours learning is theirs learning (and 60 s less).
OURS = [n for n in CLASSIFICATION if not n.endswith(".l2l")]


@needs_omniglot
@pytest.mark.slow
@pytest.mark.learning
@pytest.mark.parametrize("name", OURS)
def test_meta_training_beats_chance_on_omniglot_5way_1shot(name, omniglot):
    """60 meta-iterations of 4 tasks must lift validation accuracy clearly above chance (20%)."""
    suite, episodes, problem = omniglot
    val, _ = episodes.fixed("val", 40)
    algorithm = build(name, problem)
    steps = algorithm.evaluation_steps(suite.test_inner_steps)
    start = time.perf_counter()
    losses = [algorithm.meta_train_step(episodes.train(0, iteration), iteration) for iteration in range(60)]
    after = algorithm.evaluate(val, steps).mean().item()
    seconds = time.perf_counter() - start
    loss = torch.stack(losses)
    assert torch.isfinite(loss).all(), f"{name}: non-finite meta-training loss {loss.tolist()}"
    assert after > 35.0, (
        f"{name}: validation accuracy {after:.1f}% on 40 episodes after 60 meta-iterations (chance 20%, "
        f"needed > 35%); meta-training loss {loss[:10].mean():.3f} -> {loss[-10:].mean():.3f}; {seconds:.0f} s"
    )


@needs_omniglot
def test_image_episodes_carry_each_examples_training_class(omniglot):
    suite, episodes, problem = omniglot
    batch = episodes.train(0, 0)
    assert problem.n_train_classes == 4112
    for classes, labels in ((batch.support_classes, batch.support_y), (batch.query_classes, batch.query_y)):
        assert classes.shape == labels.shape and classes.dtype == torch.long
        assert 0 <= classes.min() and classes.max() < problem.n_train_classes
    # The same label is the same class, in the support and the query set alike.
    for task in range(len(batch)):
        for label in range(suite.ways):
            found = torch.cat([batch.support_classes[task][batch.support_y[task] == label],
                               batch.query_classes[task][batch.query_y[task] == label]]).unique()
            assert len(found) == 1
    part = batch.slice(1, 3).to("cpu")
    assert torch.equal(part.support_classes, batch.support_classes[1:3])
    assert torch.equal(part.query_classes, batch.query_classes[1:3])


# Construction and evaluation contracts, on synthetic episodes --------------------------------------


@pytest.mark.parametrize("name", CLASSIFICATION)
def test_construction_uses_only_the_given_generator(name):
    if name.endswith(".l2l"):
        pytest.importorskip("learn2learn")
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = build(name, synthetic_problem()).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(2)
    second = build(name, synthetic_problem()).state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("name", NEW)
def test_evaluate_returns_one_accuracy_per_task_and_leaves_weights_alone(name):
    algorithm = build(name, synthetic_problem())
    batch = synthetic_batch(tasks=3)
    weights = {k: v.clone() for k, v in algorithm.state_dict().items()}
    values = algorithm.evaluate(batch, algorithm.evaluation_steps(10))
    assert values.shape == (3,) and torch.isfinite(values).all() and ((0 <= values) & (values <= 100)).all()
    assert all(torch.equal(weights[k], v) for k, v in algorithm.state_dict().items())


@pytest.mark.parametrize("name", NEW)
def test_one_meta_train_step_changes_the_weights_and_returns_a_finite_loss(name):
    algorithm = build(name, synthetic_problem())
    before = {k: v.clone() for k, v in algorithm.state_dict().items()}
    loss = algorithm.meta_train_step(synthetic_batch(), 0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in algorithm.state_dict().items())


@pytest.mark.parametrize("name", ["matchingnet", "relationnet", "metaoptnet.ridge", "metaoptnet.svm"])
@pytest.mark.parametrize("shots", [1, 3])
def test_query_scores_have_one_column_per_class(name, shots):
    algorithm = build(name, synthetic_problem())
    with torch.no_grad():
        scores = algorithm.logits(synthetic_batch(tasks=2, ways=5, shots=shots, queries=4))
    assert scores.shape == (2, 20, 5) and torch.isfinite(scores).all()
    if name == "relationnet":
        assert ((0 <= scores) & (scores <= 1)).all()


def test_baseline_needs_the_training_classes():
    with pytest.raises(BenchError, match="pre-trains over all training classes"):
        build("baseline", synthetic_problem(n_train_classes=None))
    algorithm = build("baseline", synthetic_problem())
    batch = synthetic_batch()
    with pytest.raises(BenchError, match="support_classes"):
        algorithm.meta_loss(TaskBatch(*batch.tensors()))


def test_baseline_finetunes_each_task_independently():
    """Fine-tuning all tasks at once must give each task what fine-tuning it alone gives."""
    algorithm: Baseline = build("baselinepp", synthetic_problem())
    batch = synthetic_batch(tasks=3, queries=3)
    together = algorithm.evaluate(batch, 20)
    alone = torch.cat([algorithm.evaluate(batch.slice(i, i + 1), 20) for i in range(3)])
    assert torch.equal(together, alone)


# Heads against exact solutions, in float64 ---------------------------------------------------------


def tiny_problem(ways: int = 3, shots: int = 2, queries: int = 4, dim: int = 4, spread: float = 0.3):
    """Separable clusters: support (1, ways*shots, dim), labels, query (1, ways*queries, dim)."""
    gen = generator("tiny problem", ways, shots, dim)
    centers = 3 * torch.randn(ways, dim, generator=gen, dtype=torch.float64)
    labels = torch.arange(ways).repeat_interleave(shots)
    support = centers[labels] + spread * torch.randn(ways * shots, dim, generator=gen, dtype=torch.float64)
    query = centers.repeat_interleave(queries, 0) + spread * torch.randn(ways * queries, dim, generator=gen,
                                                                          dtype=torch.float64)
    return support[None], labels[None], query[None]


def test_ridge_head_equals_the_primal_closed_form():
    support, labels, query = tiny_problem(dim=7)
    lam = 0.7
    x, y = support[0], F.one_hot(labels[0], 3).double()
    weights = torch.linalg.solve(x.T @ x + lam * torch.eye(7, dtype=torch.float64), x.T @ y)  # (d, ways)
    torch.testing.assert_close(ridge_logits(support, labels, query, 3, lam)[0], query[0] @ weights, rtol=1e-10, atol=1e-10)


def test_ridge_head_gradients_pass_gradcheck():
    support, labels, query = tiny_problem()
    support.requires_grad_()
    assert torch.autograd.gradcheck(lambda s: ridge_logits(s, labels, query, 3, 0.5), (support,))


def test_simplex_projection_satisfies_its_optimality_conditions():
    """p is the projection of v iff p = max(v - theta, 0) for one theta per row, with sum(p) = total."""
    v = 2 * torch.randn(50, 6, generator=generator("simplex"), dtype=torch.float64)
    p = simplex_projection(v, 0.3)
    torch.testing.assert_close(p.sum(-1), torch.full((50,), 0.3, dtype=torch.float64))
    positive = p > 0
    theta = ((v - p) * positive).sum(-1, keepdim=True) / positive.sum(-1, keepdim=True)
    torch.testing.assert_close(p, (v - theta).clamp_min(0), rtol=0, atol=1e-12)


def svm_objectives(support: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor, c: float) -> tuple[float, float]:
    """Primal objective at w(alpha) and dual objective of the Crammer-Singer SVM: equal at the optimum."""
    x, y = support[0], F.one_hot(labels[0], alpha.shape[-1]).double()
    w = alpha[0].T @ x  # (ways, d)
    scores = x @ w.T
    slack = (1 - y + scores - (scores * y).sum(-1, keepdim=True)).amax(-1)  # >= 0: the true class gives 0
    primal = 0.5 * w.pow(2).sum() + c * slack.sum()
    dual = -0.5 * w.pow(2).sum() + (alpha[0] * y).sum()
    return primal.item(), dual.item()


@pytest.mark.parametrize("n", [1, 5, 25, 75])
def test_the_step_size_bound_lies_between_the_largest_eigenvalue_and_n_to_the_1_64_times_it(n):
    generator = torch.Generator().manual_seed(n)
    features = torch.randn(6, n, 16, generator=generator, dtype=torch.float64)
    features = features * torch.logspace(-3, 3, 6, dtype=torch.float64)[:, None, None]  # scales far from 1
    gram = features @ features.transpose(1, 2)
    largest = torch.linalg.eigvalsh(gram)[:, -1]
    bound = largest_eigenvalue_bound(gram)[:, 0, 0]
    assert (bound >= largest * (1 - 1e-12)).all() and (bound <= largest * n ** (1 / 64) * (1 + 1e-12)).all()


@pytest.mark.parametrize("c", [0.05, 0.1, 10.0])
def test_svm_dual_matches_an_exact_qp_solution(c):
    scipy_optimize = pytest.importorskip("scipy.optimize")
    support, labels, _ = tiny_problem()
    n, ways = support.shape[1], 3
    kernel = (support[0] @ support[0].T).numpy()
    y = F.one_hot(labels[0], ways).double().numpy()

    def objective(a):
        a = a.reshape(n, ways)
        return 0.5 * (a * (kernel @ a)).sum() - (a * y).sum()

    def gradient(a):
        return (kernel @ a.reshape(n, ways) - y).ravel()

    rows = [{"type": "eq", "fun": lambda a, i=i: a.reshape(n, ways)[i].sum(),
             "jac": lambda a, i=i: torch.eye(n, dtype=torch.float64)[i].repeat_interleave(ways).numpy()}
            for i in range(n)]
    bounds = [(None, c * y[i, m]) for i in range(n) for m in range(ways)]
    exact = scipy_optimize.minimize(objective, 0 * y.ravel(), jac=gradient, bounds=bounds, constraints=rows,
                                    method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000})
    assert exact.success, exact.message
    alpha = crammer_singer_dual(support @ support.transpose(1, 2), F.one_hot(labels, ways).double(), c, 2000)
    torch.testing.assert_close(alpha[0], torch.from_numpy(exact.x.reshape(n, ways)), rtol=0, atol=1e-7)
    primal, dual = svm_objectives(support, labels, alpha, c)
    assert abs(primal - dual) < 1e-8 * max(1.0, abs(primal)), (primal, dual)


def test_svm_dual_reaches_the_optimum_within_the_default_iterations():
    from bench.algorithms.metaoptnet import SVMHparams

    support, labels, _ = tiny_problem(ways=5, shots=1, dim=16)
    one_hot = F.one_hot(labels, 5).double()
    gram = support @ support.transpose(1, 2)
    exact = crammer_singer_dual(gram, one_hot, 0.1, 5000)
    approx = crammer_singer_dual(gram, one_hot, 0.1, SVMHparams().svm_iterations)
    torch.testing.assert_close(approx, exact, rtol=0, atol=1e-6)
    primal, dual = svm_objectives(support, labels, exact, 0.1)
    assert abs(primal - dual) < 1e-9


def test_svm_head_gradient_approaches_the_derivative_of_the_exact_solution():
    """Backpropagating through the unrolled solver gives the derivative of the converged solution map.

    The derivative converges more slowly than the solution: on this problem it is off by 25% after
    50 steps, 1.4% after 100 and 1e-8 after 200 (the dual solution: 11%, 2e-4 and 5e-11).
    """
    support, labels, query = tiny_problem()
    weights = torch.randn(1, query.shape[1], 3, generator=generator("svm grad"), dtype=torch.float64)

    def loss(s: torch.Tensor, iterations: int) -> torch.Tensor:
        return (svm_logits(s, labels, query, 3, 0.1, iterations) * weights).sum()

    unrolled = support.clone().requires_grad_()
    loss(unrolled, 300).backward()
    numeric = torch.zeros_like(support)
    eps = 1e-6
    for index in range(support.numel()):
        step = torch.zeros(support.numel(), dtype=torch.float64)
        step[index] = eps
        step = step.view_as(support)
        numeric.view(-1)[index] = (loss(support + step, 500) - loss(support - step, 500)) / (2 * eps)
    torch.testing.assert_close(unrolled.grad, numeric, rtol=1e-5, atol=1e-6)


def test_matching_log_probs_are_the_attention_mass_of_each_class():
    gen = generator("matching")
    support, query = torch.randn(2, 6, 8, generator=gen), torch.randn(2, 4, 8, generator=gen)
    labels = torch.tensor([[0, 0, 1, 1, 2, 2], [2, 1, 0, 2, 1, 0]])
    log_probs = matching_log_probs(support, labels, query, 3)
    assert log_probs.shape == (2, 4, 3)
    attention = F.cosine_similarity(query.unsqueeze(2), support.unsqueeze(1), dim=-1).softmax(dim=-1)  # (2, 4, 6)
    expected = attention @ F.one_hot(labels, 3).float()
    torch.testing.assert_close(log_probs.exp(), expected)
