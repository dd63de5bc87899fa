"""Share of a meta-training step spent assembling its episodes (target < 5%), per image suite.

A benchmark, not a timed test: run with ``pytest tests/benchmarks -o addopts= --benchmark-only``.
Each round assembles one meta-batch of the suite's standard tier and takes one meta-training step
on it; the time spent assembling is measured inside the same rounds, so the share is a ratio of
two measurements made side by side, and is stored in the benchmark's ``extra_info``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator

DATA = Path(os.environ.get("BENCH_DATA_DIR", ""))


@pytest.mark.parametrize("suite_name", ["omniglot-5w1s", "tiny-imagenet-5w1s"])
@pytest.mark.parametrize("algorithm_name", ["protonet", "maml"])
def test_share_of_step_time_spent_assembling_episodes(benchmark, suite_name, algorithm_name):
    suite = load_suite(suite_name, tier="standard")
    if not any((DATA / archive).is_file() for archive in suite.data.archives):
        pytest.skip(f"BENCH_DATA_DIR has no {suite.data.kind}")
    episodes = Episodes(suite, torch.device("cpu"))
    algorithm_cls = ALGORITHMS.get(algorithm_name)
    hparams = algorithm_cls.Hparams(**suite.algorithms.get(algorithm_name, {}))
    algorithm = algorithm_cls(hparams, problem_for(suite, episodes.source), generator("benchmark", algorithm_name))
    assembling: list[float] = []

    def step() -> None:
        start = time.perf_counter()
        batch = episodes.train(0, len(assembling))
        assembling.append(time.perf_counter() - start)
        algorithm.meta_train_step(batch, len(assembling))

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)
    share = sum(assembling[1:]) / benchmark.stats.stats.total  # the first call was the warm-up round
    benchmark.extra_info.update(data_share=share, suite=suite_name, meta_batch_size=suite.meta_batch_size)
    print(f"{suite_name} {algorithm_name}: episode assembly is {100 * share:.2f}% of step time")
