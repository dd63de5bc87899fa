"""A run interrupted mid-training and resumed from its checkpoint ends bit-for-bit where an uninterrupted run ends."""

from __future__ import annotations

import pytest
import torch

from bench import records
from bench.run.checkpoints import CHECKPOINTS, load_checkpoint, save_checkpoint
from bench.run.execution import ExecutionOptions
from bench.run.executors import execute
from bench.run.runner import Episodes, plan_run

SINE = ["suite.meta_iterations=30", "suite.val_every=10"]
OMNIGLOT = ["suite.meta_iterations=6", "suite.val_every=3", "suite.val_tasks=4", "suite.test_tasks=8"]
# sine maml and Omniglot protonet: tests/run/test_device.py runs the same test on BENCH_TEST_DEVICE.
CASES = [("sine", name, SINE, 17) for name in ("fomaml", "metasgd", "anil", "reptile", "cnp", "transfer")] + [
    ("omniglot-5w1s", name, OMNIGLOT, 4)
    for name in ("matchingnet", "relationnet", "metaoptnet.svm", "baseline", "baselinepp", "maml", "metasgd")
]


def _plan(suite, algorithm, overrides, results_dir, every):
    return plan_run(suite, [algorithm], [0], "smoke", results_dir, "cpu", overrides,
                    ExecutionOptions(task_chunk=2, checkpoint_every=every))


def _interrupt_at(monkeypatch, at: int) -> None:
    """Ctrl-C when meta-iteration ``at`` asks for its batch (patching the algorithm would change its code path)."""
    original = Episodes.train

    def train(self, seed, iteration):
        if iteration == at:
            raise KeyboardInterrupt
        return original(self, seed, iteration)

    monkeypatch.setattr(Episodes, "train", train)


@pytest.mark.slow
@pytest.mark.parametrize(("suite", "algorithm", "overrides", "stop_at"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, suite, algorithm, overrides, stop_at):
    [whole] = execute(_plan(suite, algorithm, overrides, tmp_path / "whole", 0), progress=False)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, stop_at)
        with pytest.raises(KeyboardInterrupt):
            execute(_plan(suite, algorithm, overrides, tmp_path / "cut", 2), progress=False)
    [interrupted] = [r for r in map(records.load_record, records.iter_record_paths(tmp_path / "cut"))]
    assert interrupted["status"] == "interrupted"
    assert list((tmp_path / "cut" / CHECKPOINTS).rglob("*.pt")), "the interrupted run keeps its checkpoint"

    [resumed] = execute(_plan(suite, algorithm, overrides, tmp_path / "cut", 2), progress=False, resume=True)
    assert resumed["status"] == whole["status"] == "completed"
    assert resumed["run_id"] == interrupted["run_id"], "the interrupted record is continued, not duplicated"
    assert resumed["resumed"][0]["at_iteration"] == stop_at - stop_at % 2
    assert resumed["metric"]["per_task"] == whole["metric"]["per_task"]
    assert [p["train_loss"] for p in resumed["training"]["curve"]] == [p["train_loss"] for p in whole["training"]["curve"]]
    assert resumed["training"]["best_iteration"] == whole["training"]["best_iteration"]
    assert resumed["timing"]["timed_iterations"] == whole["timing"]["timed_iterations"]
    assert not list((tmp_path / "cut" / CHECKPOINTS).rglob("*.pt")), "a finished run's checkpoint is removed"
    assert len(list(records.iter_record_paths(tmp_path / "cut"))) == 1


def test_resume_skips_finished_runs_and_runs_the_rest(tmp_path):
    first = execute(_plan("sine", "cnp", SINE, tmp_path, None), progress=False)
    plan = plan_run("sine", ["cnp", "reptile"], [0], "smoke", tmp_path, "cpu", SINE)
    both = execute(plan, progress=False, resume=True)
    assert [r["algorithm"]["name"] for r in both] == ["cnp", "reptile"]
    assert both[0]["run_id"] == first[0]["run_id"], "the finished cnp run is taken as it is"
    assert len(list(records.iter_record_paths(tmp_path))) == 2
    again = execute(plan, progress=False, resume=True)
    assert [r["run_id"] for r in again] == [r["run_id"] for r in both]


def test_resume_does_not_take_a_run_with_other_hyperparameters(tmp_path):
    [old] = execute(plan_run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", [*SINE, "cnp.lr=0.01"]), progress=False)
    [new] = execute(plan_run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", SINE), progress=False, resume=True)
    assert new["run_id"] != old["run_id"]


def test_an_unreadable_checkpoint_means_starting_over(tmp_path, caplog):
    path = tmp_path / "x.pt"
    path.write_bytes(b"not a checkpoint")
    assert load_checkpoint(path) is None
    assert "starts from the beginning" in caplog.text
    save_checkpoint(path, {"iteration": 3, "tensor": torch.ones(2)})
    assert load_checkpoint(path)["iteration"] == 3
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_a_damaged_checkpoint_is_refused_and_the_run_starts_over(tmp_path, caplog):
    path = tmp_path / "x.pt"
    save_checkpoint(path, {"iteration": 3, "weights": torch.linspace(0, 1, 1000)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit, in the weights' bytes
    path.write_bytes(bytes(data))
    assert load_checkpoint(path) is None
    assert "is damaged (its content does not match its SHA-256)" in caplog.text


def test_a_checkpoint_the_disk_refuses_does_not_stop_the_run(tmp_path, monkeypatch, caplog):
    import errno

    import bench.run.checkpoints

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(bench.run.checkpoints, "write_atomic", full)
    [record] = execute(plan_run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", SINE), progress=False)
    assert record["status"] == "completed"
    assert "not written (No space left on device); training goes on without it" in caplog.text


class Killed(BaseException):
    """Like kill -9: nothing after it runs, not even the final record write."""


def test_every_continuation_stays_in_the_record_even_if_killed_again(tmp_path, monkeypatch):
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 17)
        with pytest.raises(KeyboardInterrupt):
            execute(_plan("sine", "maml", SINE, cut, 2), progress=False)
    with monkeypatch.context() as patch:
        original = Episodes.train
        patch.setattr(Episodes, "train", lambda self, seed, i: (_ for _ in ()).throw(Killed()) if i == 25
                      else original(self, seed, i))
        with pytest.raises(Killed):
            execute(_plan("sine", "maml", SINE, cut, 2), progress=False, resume=True)
    [stored] = map(records.load_record, records.iter_record_paths(cut))
    assert [r["at_iteration"] for r in stored["resumed"]] == [16]  # written when the continuation began
    [done] = execute(_plan("sine", "maml", SINE, cut, 2), progress=False, resume=True)
    assert done["status"] == "completed" and [r["at_iteration"] for r in done["resumed"]] == [16, 24]


def test_a_non_finite_loss_before_a_checkpoint_is_still_reported_after_resuming(tmp_path, monkeypatch):
    from bench.algorithms.cnp import CNP

    original = CNP.meta_train_step
    # Iteration 4 (index 3) has a non-finite loss; the next look at the losses is at iteration 10, after
    # the checkpoint of iteration 6 and the interruption at 7.
    monkeypatch.setattr(CNP, "meta_train_step", lambda self, batch, i: original(self, batch, i) * (
        float("nan") if i == 3 else 1.0))
    with monkeypatch.context() as patch:
        _interrupt_at(patch, 7)
        with pytest.raises(KeyboardInterrupt):
            execute(_plan("sine", "cnp", SINE, tmp_path, 2), progress=False)
    [resumed] = execute(_plan("sine", "cnp", SINE, tmp_path, 2), progress=False, resume=True)
    assert resumed["status"] == "diverged" and resumed["diverged"]["iteration"] == 4
