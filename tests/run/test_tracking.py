"""--log tensorboard / mlflow: each run's curve and results read back from the real libraries."""

from __future__ import annotations

import importlib.util
import logging

import pytest

from bench.run import tracking
from tests.conftest import read_records

FAST = ["--tier", "smoke", "--algorithms", "maml", "--set", "suite.meta_iterations=12", "--set", "suite.val_every=6"]


def test_tensorboard_gets_the_curve_the_results_and_the_run_id(cli, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    code, _, err = cli("run", "sine", *FAST, "--results-dir", str(tmp_path / "r"), "--log", f"tensorboard:{tmp_path / 'tb'}")
    assert code == 0, err
    [record] = read_records(tmp_path / "r")
    [folder] = (tmp_path / "tb").iterdir()
    assert record["run_id"][:8] in folder.name and folder.name.startswith("sine-smoke-maml-seed0-")
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    curve = record["training"]["curve"]
    assert [(e.step, pytest.approx(e.value)) for e in events.Scalars("train/loss")] == \
        [(p["iteration"], p["train_loss"]) for p in curve]
    assert [e.value for e in events.Scalars("val/metric")] == pytest.approx([p["val_metric"] for p in curve])
    assert events.Scalars("test/metric")[0].value == pytest.approx(record["metric"]["mean"])
    assert events.Scalars("throughput/meta_train_tasks_per_s")[0].value == pytest.approx(
        record["timing"]["meta_train_tasks_per_s"])
    text = b"".join(t.tensor_proto.string_val[0] for t in events.Tensors("bench/run/text_summary")).decode()
    assert record["run_id"] in text and '"inner_lr"' in text


def test_mlflow_gets_the_curve_the_results_tags_and_hyperparameters(cli, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, _, err = cli("run", "sine", *FAST, "--results-dir", str(tmp_path / "r"), "--log", f"mlflow:{uri}")
    assert code == 0, err
    [record] = read_records(tmp_path / "r")
    client = MlflowClient(tracking_uri=uri)
    [run] = client.search_runs([client.get_experiment_by_name("bench/sine").experiment_id])
    assert run.data.tags["bench.run_id"] == record["run_id"] and run.data.tags["bench.status"] == "completed"
    assert run.data.tags["bench.protocol_hash"] == record["suite"]["protocol_hash"] and run.info.status == "FINISHED"
    assert run.data.params["inner_lr"] == str(record["algorithm"]["hyperparameters"]["inner_lr"])
    history = client.get_metric_history(run.info.run_id, "val/metric")
    assert [(m.step, m.value) for m in history] == [(p["iteration"], pytest.approx(p["val_metric"]))
                                                     for p in record["training"]["curve"]]
    assert run.data.metrics["test/metric"] == pytest.approx(record["metric"]["mean"])
    assert run.data.metrics["test/ci95"] == pytest.approx(record["metric"]["ci95"])


def test_an_unknown_or_missing_tracker_is_refused_before_any_work(cli, tmp_path, monkeypatch):
    code, _, err = cli("run", "sine", *FAST, "--results-dir", str(tmp_path), "--log", "tensorbord")
    assert code == 2 and "unknown tracker 'tensorbord'" in err and "tensorboard" in err
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    code, _, err = cli("run", "sine", *FAST, "--results-dir", str(tmp_path), "--log", "mlflow")
    assert code == 2 and "pip install 'metalearn-bench[mlflow]'" in err
    assert not list(tmp_path.rglob("*.json"))


def test_a_tracker_that_fails_is_dropped_and_the_run_completes(cli, tmp_path, monkeypatch, caplog):
    pytest.importorskip("tensorboard")

    def broken(self, point):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.TensorBoardTracker, "curve_point", broken)
    with caplog.at_level(logging.WARNING):
        code, _, err = cli("run", "sine", *FAST, "--results-dir", str(tmp_path / "r"), "--log", f"tensorboard:{tmp_path}")
    assert code == 0, err
    [record] = read_records(tmp_path / "r")
    assert record["status"] == "completed" and "no more of this run goes there" in caplog.text
