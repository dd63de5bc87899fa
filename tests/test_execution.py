"""Execution options: the measured task chunk and its cache, refusals, autocast, compile, no device syncs."""

from __future__ import annotations

import json

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.errors import BenchError
from bench.execution import ExecutionOptions, choose_task_chunk, chunk_candidates
from bench.runner import Episodes, problem_for
from bench.seeding import generator
from tests.conftest import read_records


def build(name: str, suite_name: str = "sine", **hparams):
    suite = load_suite(suite_name, tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    algorithm_cls = ALGORITHMS.get(name)
    hparams = {**suite.algorithms.get(name, {}), **hparams}
    algorithm = algorithm_cls(algorithm_cls.Hparams(**hparams), problem_for(suite, episodes.source), generator("execution"))
    return algorithm, episodes.train(0, 0)


def test_chunk_candidates_cover_one_to_the_whole_batch():
    assert chunk_candidates(1) == [1]
    assert chunk_candidates(25) == [1, 2, 4, 8, 16, 25]
    assert chunk_candidates(32) == [1, 2, 4, 8, 16, 32]


def test_task_chunk_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("maml")
    before = {k: v.clone() for k, v in algorithm.state_dict().items()}
    first = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert first["task_chunk_choice"] == "measured"
    assert first["task_chunk"] in chunk_candidates(len(batch))
    assert str(first["task_chunk"]) in first["task_chunk_seconds"]
    # measuring computes meta-gradients but leaves the weights and their gradients as they were
    assert all(torch.equal(before[k], v) for k, v in algorithm.state_dict().items())
    assert all(p.grad is None for p in algorithm.parameters())
    again, _ = build("maml")
    second = choose_task_chunk(again, batch, torch.device("cpu"), ExecutionOptions())
    assert second["task_chunk_choice"] == "cached measurement"
    assert second["task_chunk"] == first["task_chunk"] == again.task_chunk
    # another configuration (more inner steps) is measured anew
    other, _ = build("maml", inner_steps=2)
    assert choose_task_chunk(other, batch, torch.device("cpu"), ExecutionOptions())["task_chunk_choice"] == "measured"
    assert len(json.loads((tmp_path / "task-chunk.json").read_text())) == 2


def test_a_damaged_chunk_cache_is_measured_over(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    (tmp_path / "task-chunk.json").write_text("{not json")
    algorithm, batch = build("fomaml")
    assert choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())["task_chunk_choice"] == "measured"
    json.loads((tmp_path / "task-chunk.json").read_text())


def test_a_set_task_chunk_is_used_and_methods_without_chunks_say_so():
    algorithm, batch = build("maml")
    assert choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions(task_chunk=3)) == {
        "task_chunk": 3, "task_chunk_choice": "set"}
    assert algorithm.task_chunk == 3
    reference, batch = build("maml.l2l")
    assert choose_task_chunk(reference, batch, torch.device("cpu"), ExecutionOptions())["task_chunk"] is None


def test_options_that_cannot_run_are_refused_before_any_work(cli, tmp_path):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml", "--compile", "--results-dir", str(tmp_path))
    assert code == 2
    assert "--compile: maml differentiates through its inner gradient steps" in err
    assert not list(tmp_path.rglob("*.json"))
    with pytest.raises(SystemExit):
        cli("run", "sine", "--task-chunk", "0")
    with pytest.raises(BenchError, match="positive"):
        ExecutionOptions(task_chunk=0).check([], {}, torch.device("cpu"))


def test_execution_options_are_recorded(cli, tmp_path):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml,maml.l2l",
                       "--task-chunk", "2", "--checkpoint-inner-steps", "--autocast", "bf16", "--results-dir", str(tmp_path))
    assert code == 0, err
    executions = {r["algorithm"]["name"]: r["execution"] for r in read_records(tmp_path)}
    assert executions["maml"] == {"task_chunk": 2, "checkpoint_inner_steps": True, "autocast": "bf16", "compile": False,
                                  "threads": None, "checkpoint_every": None, "task_chunk_choice": "set"}
    assert executions["maml.l2l"]["task_chunk"] is None and executions["maml.l2l"]["checkpoint_inner_steps"] is None


@pytest.mark.slow
def test_compiled_first_order_run_matches_the_eager_run(cli, tmp_path):
    """torch.compile (inductor, CPU here) changes rounding at most: the same episodes give close scores."""
    args = ["run", "sine", "--tier", "smoke", "--algorithms", "fomaml", "--task-chunk", "4",
            "--set", "suite.meta_iterations=20", "--set", "suite.val_every=20"]
    assert cli(*args, "--results-dir", str(tmp_path / "eager"))[0] == 0
    code, _, err = cli(*args, "--compile", "--results-dir", str(tmp_path / "compiled"))
    assert code == 0, err
    (eager,), (compiled,) = read_records(tmp_path / "eager"), read_records(tmp_path / "compiled")
    assert compiled["execution"]["compile"] is True
    assert compiled["metric"]["mean"] == pytest.approx(eager["metric"]["mean"], rel=1e-3)


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile"])
def test_no_host_device_sync_inside_the_inner_loop(name, monkeypatch):
    """On CUDA these calls would block the host until the device is done; none may run in a meta-gradient."""
    algorithm, batch = build(name)
    algorithm.task_chunk = 2

    def forbidden(*args, **kwargs):
        raise AssertionError("host-device synchronisation inside the inner loop")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, forbidden)
    algorithm.accumulate_meta_gradient(batch)
    monkeypatch.undo()
    assert all(p.grad is not None for p in algorithm.backbone.parameters())


def test_an_algorithm_that_replaces_meta_train_step_is_not_chunked():
    """A plugin with its own meta_train_step and no meta_loss (and no parameters) runs as written."""
    from bench.algorithms import Algorithm

    class Zero(Algorithm):
        family = "baseline"

        def meta_train_step(self, batch, iteration):
            return torch.zeros(())

    algorithm, batch = build("maml")
    zero = Zero(algorithm.hparams, algorithm.problem, generator("zero"))
    assert not Zero.chunks_tasks() and algorithm.chunks_tasks()
    assert choose_task_chunk(zero, batch, torch.device("cpu"), ExecutionOptions())["task_chunk"] is None
