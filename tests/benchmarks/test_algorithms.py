"""One meta-training step and one test episode of every algorithm, on the smoke tiers, as benchmarks.

A speed guard for pull requests, not a measurement to publish: ``tox -e benchmark -- --benchmark-save=main``
on main, then ``tox -e benchmark -- --benchmark-compare=NNNN --benchmark-compare-fail=min:50%`` on the
branch, on the same machine (docs/performance.md, "pytest-benchmark"). Each algorithm is built as ``bench run`` builds
it (``plan_run``, ``build_algorithm``, ``configure_execution``), except that the task and evaluation chunks are
fixed: the runner's measured choices are cached per machine and can differ between two runs' caches.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from bench.algorithms import ALGORITHMS, Algorithm
from bench.config import load_suite
from bench.datasets import check_available
from bench.errors import BenchError
from bench.run.execution import ExecutionOptions, autocast
from bench.run.runner import RunPlan, build_algorithm, configure_execution, plan_run
from bench.tasks import TaskBatch

TIER = "smoke"
DEVICE = "cpu"
# One intra-op thread, as the standard-tier records were made: on a 2-core machine shared with other jobs,
# two threads wait for each other at every operation (a sine ANIL step took 1.6 s with 2 threads, 6 ms with 1).
THREADS = 1
# The smoke image and text meta-batches (4 tasks) in one grouped call; sine's 25 tasks in 7 chunks.
TASK_CHUNK = 4
# Rounds per benchmark: a sine or text step takes 0.002-30 ms, an Omniglot one 50-900 ms. Fifty rounds of
# a 0.2 ms call fit in one scheduler time slice, so their median says more about what else was running.
ROUNDS = {"sine": 200, "omniglot-5w1s": 10, "banking77-5w1s": 200}


def _pairs() -> list[Any]:
    """(suite, algorithm) for every registered algorithm, on the first suite of each task type it applies to.

    So the text suite adds only the text-only methods (centroid): the others are timed on Omniglot.
    """
    pairs: list[Any] = []
    timed: set[tuple[str, str]] = set()  # (algorithm, task type)
    for suite_name in ROUNDS:
        suite = load_suite(suite_name, tier=TIER)
        for name in ALGORITHMS.names():
            applies = name not in suite.exclude_algorithms and ALGORITHMS.get(name).inapplicable(suite) is None
            if applies and (name, suite.task_type) not in timed:
                timed.add((name, suite.task_type))
                pairs.append(pytest.param(suite_name, name, id=f"{suite_name}-{name}"))
    return pairs


PAIRS = _pairs()


@pytest.fixture(scope="module", autouse=True)
def threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(previous)


@dataclass(frozen=True)
class Prepared:
    plan: RunPlan
    train_batch: TaskBatch  # the first meta-batch of seed 0, as the runner's first iteration draws it
    test_batch: TaskBatch  # the first test episode


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Prepared]:
    """Each suite's plan and episodes, built once for the module on first use (loading data is the slow part)."""
    results_dir = tmp_path_factory.mktemp("records")  # plan_run checks it is writable; nothing is written

    @functools.cache
    def prepare(suite_name: str) -> Prepared:
        plan = plan_run(suite_name, tier=TIER, device=DEVICE, results_dir=results_dir,
                        execution=ExecutionOptions(task_chunk=TASK_CHUNK, eval_chunk=TASK_CHUNK))
        assert plan.episodes is not None
        seed = plan.runs[0].seed
        return Prepared(plan, plan.episodes.train(seed, 0), plan.episodes.fixed("test", 1)[0])

    def get(suite_name: str) -> Prepared:
        try:
            check_available(load_suite(suite_name, tier=TIER))
        except BenchError as exc:
            pytest.skip(f"{suite_name}: {exc}")
        return prepare(suite_name)

    return get


def build(setup: Prepared, algorithm_name: str) -> tuple[Algorithm, dict[str, Any]]:
    """The algorithm as the runner builds it before its first step, and the benchmark's identifying extra_info."""
    plan = setup.plan
    run = next(r for r in plan.runs if r.algorithm.name == algorithm_name)
    algorithm = build_algorithm(plan, run, plan.episodes)
    steps = algorithm.evaluation_steps(plan.suite.test_inner_steps)
    execution = configure_execution(algorithm, plan.execution, setup.train_batch, plan.device,
                                    evaluation=(plan.episodes.evaluation_sample, steps, None))
    algorithm.train()
    info = {"suite": plan.suite.name, "algorithm": algorithm_name, "tier": plan.suite.tier, "device": str(plan.device),
            "task_chunk": execution["task_chunk"], "meta_batch_size": plan.suite.meta_batch_size,
            "torch_threads": torch.get_num_threads(), "seed": run.seed}
    return algorithm, info


@pytest.mark.parametrize(("suite_name", "algorithm_name"), PAIRS)
def test_meta_train_step(benchmark: Any, prepared: Callable[[str], Prepared], suite_name: str, algorithm_name: str) -> None:
    setup = prepared(suite_name)
    algorithm, info = build(setup, algorithm_name)
    if not any(True for _ in algorithm.parameters()):
        # A step that learns nothing takes microseconds: its timing is scheduler noise, and flakes the comparison.
        pytest.skip(f"{algorithm_name} has no parameters: its meta-training step does nothing")
    iterations = itertools.count()

    def step() -> None:
        with autocast(setup.plan.execution, setup.plan.device):
            algorithm.meta_train_step(setup.train_batch, next(iterations))

    benchmark.group = f"{suite_name}: meta-train step"
    benchmark.extra_info.update(info)
    benchmark.pedantic(step, rounds=ROUNDS[suite_name], warmup_rounds=1, iterations=1)


@pytest.mark.parametrize(("suite_name", "algorithm_name"), PAIRS)
def test_test_episode(benchmark: Any, prepared: Callable[[str], Prepared], suite_name: str, algorithm_name: str) -> None:
    setup = prepared(suite_name)
    algorithm, info = build(setup, algorithm_name)
    steps = algorithm.evaluation_steps(setup.plan.suite.test_inner_steps)

    def episode() -> None:
        with autocast(setup.plan.execution, setup.plan.device):
            algorithm.evaluate(setup.test_batch, steps)

    benchmark.group = f"{suite_name}: test episode"
    benchmark.extra_info.update(info, inner_steps=steps)
    benchmark.pedantic(episode, rounds=ROUNDS[suite_name], warmup_rounds=1, iterations=1)
