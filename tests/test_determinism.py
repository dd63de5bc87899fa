"""The same seed twice gives the same bits, for every registered algorithm on every backbone, at
torch's default thread count (the word-CNN did not: its embedding gradient was added in a
thread-timing order, so two runs of one configuration gave different per-episode values)."""

from __future__ import annotations

import pytest
import torch

from bench.config import load_suite
from bench.datasets import check_available
from bench.errors import BenchError
from bench.run.execution import ExecutionOptions
from bench.run.executors import execute
from bench.run.runner import plan_run, resolve_algorithms

DEFAULT_THREADS = torch.get_num_threads()  # as the test process started: what a user's run gets
# Two meta-iterations, one validation, a few test episodes: every step of a run once; a thread race shows in any step.
SHORT = ["suite.meta_iterations=2", "suite.val_every=2", "suite.val_tasks=2", "suite.test_tasks=4", "suite.warmup_iterations=1"]
BACKBONES = {  # backbone -> (suite at its smoke tier, overrides)
    "mlp": ("sine", SHORT),
    "conv4": ("omniglot-5w1s", SHORT),
    "resnet12": ("omniglot-5w1s", [*SHORT, "suite.model={kind: resnet12, channels: [8, 8, 8, 8]}"]),
    "text-minilm": ("reuters-5w1s", SHORT),
    "text-wordcnn": ("reuters-5w1s", [*SHORT, "suite.model.encoder=wordcnn"]),
    "text-minilm-finetune": ("banking77-5w1s", [*SHORT, "suite.model.encoder=minilm-finetune"]),
}


def _pairs() -> list[tuple[str, str]]:
    from bench.run.runner import Overrides

    pairs = []
    for backbone, (suite_name, overrides) in BACKBONES.items():
        parsed = Overrides.parse(overrides)
        suite = load_suite(suite_name, tier="smoke", overrides=parsed.suite)
        algorithms, _ = resolve_algorithms(suite, None)
        pairs += [(backbone, a.name) for a in algorithms]
    return pairs


@pytest.mark.parametrize("backbone, algorithm", _pairs())
def test_the_same_seed_twice_gives_the_same_bits(backbone, algorithm, tmp_path):
    suite, overrides = BACKBONES[backbone]
    if suite != "sine":  # sine's tasks are generated
        try:
            check_available(load_suite(suite))
        except BenchError as exc:  # the data is not on this machine
            pytest.skip(str(exc))
    torch.set_num_threads(DEFAULT_THREADS)
    # Two chunks of the meta-batch, set rather than measured: the measured choice is cached, so a rerun takes
    # the same path (tests/run/test_execution.py); measuring each of these 60-odd configurations would cost minutes.
    options = ExecutionOptions(task_chunk=2)
    plans = [plan_run(suite, [algorithm], [0], "smoke", tmp_path / side, "cpu", overrides, options) for side in "ab"]
    first, second = (execute(plan, progress=False)[0] for plan in plans)
    assert first["status"] == second["status"] == "completed", (first.get("error"), second.get("error"))
    assert first["environment"]["torch_threads"] == second["environment"]["torch_threads"] == DEFAULT_THREADS
    assert first["training"]["state_sha256"] == second["training"]["state_sha256"]  # the trained model, bit for bit
    assert first["metric"]["per_task"] == second["metric"]["per_task"]
    assert [p["val_metric"] for p in first["training"]["curve"]] == [p["val_metric"] for p in second["training"]["curve"]]
    assert [p["train_loss"] for p in first["training"]["curve"]] == [p["train_loss"] for p in second["training"]["curve"]]
