from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import records
from bench.algorithms.maml import MAML
from bench.run.executors import execute
from bench.run.runner import DIVERGENCE_CHECK_EVERY, plan_run
from tests.conftest import read_records


def smoke(tmp_path, algorithms=("maml",), **kwargs):
    return plan_run("sine", list(algorithms), tier="smoke", results_dir=tmp_path, device="cpu", **kwargs)


def test_same_seed_twice_gives_identical_per_task_numbers(tmp_path):
    algorithms = ("maml", "metasgd", "reptile", "cnp", "transfer")
    first = execute(smoke(tmp_path / "a", algorithms), progress=False)
    second = execute(smoke(tmp_path / "b", algorithms), progress=False)
    for a, b in zip(first, second, strict=True):
        assert a["status"] == b["status"] == "completed"
        assert a["metric"]["per_task"] == b["metric"]["per_task"]
        assert a["training"]["curve"][-1]["val_metric"] == b["training"]["curve"][-1]["val_metric"]
    other_seed = execute(smoke(tmp_path / "c", ("maml",), seeds=[5]), progress=False)
    assert other_seed[0]["metric"]["per_task"] != first[0]["metric"]["per_task"]


def test_a_record_holds_protocol_seeds_environment_timing_and_per_task_values(tmp_path):
    [record] = execute(smoke(tmp_path, overrides=["maml.inner_lr=0.02"]), progress=False)
    stored = records.load_record(tmp_path / "sine" / "smoke" / record["_path"].rsplit("/", 1)[1])
    assert record == stored | {"_path": record["_path"]}
    assert record["schema_version"] == records.SCHEMA_VERSION and record["status"] == "completed"
    protocol = record["suite"]["protocol"]
    shown = ("shots", "queries", "meta_batch_size", "test_tasks", "test_inner_steps")
    assert [protocol[k] for k in shown] == [10, 10, 25, 50, 10]
    assert protocol["batch_norm"] == "none"
    assert record["suite"]["overrides"] == ["maml.inner_lr=0.02"]
    assert record["algorithm"]["hyperparameters"]["inner_lr"] == 0.02
    assert len(record["algorithm"]["code_version"]) == 16
    seeds = record["seeds"]
    assert seeds["training_seed"] == 0 and len(seeds["test_episodes"]["sha256"]) == 64
    assert len(record["metric"]["per_task"]) == 50 == record["metric"]["n_episodes"]
    values = torch.tensor(record["metric"]["per_task"], dtype=torch.float64)
    assert record["metric"]["mean"] == pytest.approx(values.mean().item())
    assert record["metric"]["ci95"] == pytest.approx(1.96 * values.std(unbiased=False).item() / 50**0.5)
    timing = record["timing"]
    assert timing["method"] == "perf_counter" and timing["timed_iterations"] == 38
    assert timing["meta_train_tasks_per_s"] > 0 and timing["test_tasks_per_s"] > 0
    assert 0 <= timing["data_share"] < 1
    assert record["memory"]["peak_mb"] > 0
    env = record["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert set(env["git"]) == {"commit", "dirty"}
    assert [p["iteration"] for p in record["training"]["curve"]] == [20, 40]


def test_all_algorithms_see_the_same_test_episodes(tmp_path):
    results = execute(smoke(tmp_path, ("maml", "cnp", "transfer")), progress=False)
    assert len({r["seeds"]["test_episodes"]["sha256"] for r in results}) == 1


def test_checkpoint_selection_uses_validation_only(tmp_path, monkeypatch):
    """The tested weights are those of the best validation score, not the last ones."""
    calls = []
    original = MAML.evaluate

    def spy(self, batch, steps):
        calls.append(len(batch))
        return original(self, batch, steps)

    monkeypatch.setattr(MAML, "evaluate", spy)
    [record] = execute(smoke(tmp_path), progress=False)
    assert calls == [20, 20, 50]  # two validation passes of 20 tasks, then one test pass
    curve = record["training"]["curve"]
    best = min(curve, key=lambda p: p["val_metric"])
    assert record["training"]["best_iteration"] == best["iteration"]


def test_ctrl_c_keeps_finished_records_and_stores_the_interrupted_run(tmp_path, monkeypatch):
    original = MAML.meta_train_step

    def interrupt_second_run(self, batch, iteration):
        if self.hparams.first_order and iteration == 7:
            raise KeyboardInterrupt
        return original(self, batch, iteration)

    monkeypatch.setattr(MAML, "meta_train_step", interrupt_second_run)
    with pytest.raises(KeyboardInterrupt):
        execute(smoke(tmp_path, ("maml", "fomaml")), progress=False)
    statuses = {r["algorithm"]["name"]: r for r in read_records(tmp_path)}
    assert statuses["maml"]["status"] == "completed"
    assert statuses["fomaml"]["status"] == "interrupted"
    assert "iteration 7" in statuses["fomaml"]["error"]["message"]


def test_a_failing_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    def explode(self, batch, iteration):
        raise RuntimeError("boom")

    monkeypatch.setattr(MAML, "meta_train_step", explode)
    results = execute(smoke(tmp_path, ("maml", "cnp")), progress=False)
    assert [r["status"] for r in results] == ["failed", "completed"]
    assert results[0]["error"]["message"] == "boom" and "Traceback" in results[0]["error"]["traceback"]


def test_a_diverging_run_is_stopped_recorded_as_diverged_and_kept_off_the_leaderboard(tmp_path):
    from bench.results import leaderboard

    plan = smoke(tmp_path, ("maml", "cnp"), overrides=["maml.inner_lr=1e6", "suite.meta_iterations=200", "suite.val_every=100"])
    diverged, completed = execute(plan, progress=False)
    assert diverged["status"] == "diverged" and completed["status"] == "completed"
    first_bad = diverged["diverged"]["iteration"]
    assert 1 <= first_bad <= 200 and diverged["diverged"]["value"] in ("nan", "inf", "-inf")
    assert "at iteration" in diverged["error"]["message"]
    # Stopped at the next look at the loss, not trained to the end of its budget.
    assert first_bad <= diverged["training"]["stopped_at_iteration"] <= first_bad + DIVERGENCE_CHECK_EVERY
    assert records.load_record(Path(diverged["_path"]))["status"] == "diverged"
    [(_, table)] = leaderboard.leaderboards(tmp_path, "sine", "smoke")
    assert list(table["algorithm"]) == ["cnp"]


def test_a_non_finite_loss_is_caught_at_the_exact_iteration(tmp_path, monkeypatch):
    original = MAML.meta_train_step

    def step(self, batch, iteration):
        loss = original(self, batch, iteration)
        return loss * float("nan") if iteration == 12 else loss

    monkeypatch.setattr(MAML, "meta_train_step", step)
    [record] = execute(smoke(tmp_path, overrides=["suite.meta_iterations=40"]), progress=False)
    assert record["status"] == "diverged"
    assert record["diverged"]["iteration"] == 13, "meta-iteration 12 counted from 0 is the 13th"
