"""The `bench perf` comparisons as pytest-benchmark benchmarks (same implementations, same configuration).

Run with ``pytest tests/benchmarks -o addopts= --benchmark-only``. Each benchmark times our
implementation's meta-training step; learn2learn's step on the same episodes runs in the
benchmark's (untimed) setup before every round, timed separately, so the speed-up stored in
``extra_info`` is a ratio of two measurements interleaved round by round.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from bench.measure.perf import Implementation, Setting, batch_for, comparisons, perf_suite

pytest.importorskip("learn2learn")
QUICK = False  # the configuration of the issue: Omniglot 5-way 1-shot, meta-batch 32, Conv-4-64
SETTINGS = [s for group in comparisons(QUICK) for s in group.settings if s.implementation == "ours"]


@pytest.fixture(scope="module")
def batch():
    return batch_for(perf_suite(QUICK), torch.device("cpu"))[1]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: f"{s.method}-{s.inner_steps}step-{s.label.split('(')[1][:-1]}")
def test_meta_training_step(benchmark, setting, batch):
    ours = Implementation(setting, torch.device("cpu"), batch)
    ours.choose_chunk()
    reference = None if setting.method == "protonet" else Implementation(
        Setting(setting.method, "l2l", setting.inner_steps), torch.device("cpu"), batch)
    reference_seconds: list[float] = []

    def run_reference() -> None:
        if reference is not None:
            start = time.perf_counter()
            reference.step()
            reference_seconds.append(time.perf_counter() - start)

    benchmark.pedantic(ours.step, setup=run_reference, rounds=3, warmup_rounds=1)
    info = {"tasks_per_s": len(batch) / benchmark.stats.stats.median, "task_chunk": getattr(ours.ours, "task_chunk", None)}
    if reference_seconds:
        info["speedup_vs_l2l"] = statistics.median(reference_seconds[1:]) / benchmark.stats.stats.median
    benchmark.extra_info.update(info)
