"""Experiment tracking, optional and off by default: ``--log tensorboard[:DIR]``, ``--log mlflow[:URI]``.

A tracker streams what a run's record will hold while it runs: at every validation the mean
training loss since the last one and the validation metric (the record's curve), and at the end
the test metric and its interval, the throughput, the peak memory and the run's status. Each run
is tagged with its record's run id, suite, tier, protocol hash, algorithm, code version and seed,
and carries its hyperparameters, so the tracker's runs can be matched to the records. Records
remain the source of truth: a tracker that fails is logged and turned off, the run goes on.

TensorBoard writes event files under ``DIR`` (default ``runs/``), one folder per run (``tensorboard
--logdir runs``); MLflow logs to the tracking URI (default ``sqlite:///mlruns.db``, a local file;
MLflow 3 refuses its old plain-folder store), one experiment per suite.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.errors import BenchError, did_you_mean

log = logging.getLogger(__name__)

DEFAULTS = {"tensorboard": "runs", "mlflow": "sqlite:///mlruns.db"}
NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}  # (import, extra)


@dataclass(frozen=True)
class TrackingTarget:
    """Where one tracker sends a run's curve and results: ``kind`` and its directory or URI."""

    kind: str
    where: str

    @classmethod
    def parse(cls, text: str) -> TrackingTarget:
        """``tensorboard``, ``tensorboard:DIR``, ``mlflow`` or ``mlflow:URI``; checks the library is there."""
        kind, _, where = text.partition(":")
        if kind not in DEFAULTS:
            raise BenchError(f"--log {text}: unknown tracker {kind!r}; {did_you_mean(kind, list(DEFAULTS))} "
                             "(tensorboard[:DIR] or mlflow[:URI])")
        module, extra = NEEDS[kind]
        if importlib.util.find_spec(module) is None:
            raise BenchError(f"--log {kind} needs the {module} package: pip install 'metalearn-bench[{extra}]'")
        return cls(kind, where or DEFAULTS[kind])


class RunTracker(Protocol):
    def curve_point(self, point: dict[str, Any]) -> None: ...

    def finish(self, record: dict[str, Any]) -> None: ...


def run_tags(record: dict[str, Any]) -> dict[str, str]:
    """What identifies the run: its record's run id and the fields a leaderboard entry is made of."""
    return {"bench.run_id": record["run_id"], "bench.suite": record["suite"]["name"],
            "bench.tier": record["suite"]["tier"], "bench.protocol_hash": record["suite"]["protocol_hash"],
            "bench.algorithm": record["algorithm"]["name"],
            "bench.code_version": str(record["algorithm"].get("code_version")),
            "bench.seed": str(record["seeds"]["training_seed"])}


def final_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The finished run's numbers that a tracker shows: test metric and interval, throughput, memory."""
    metric, timing = record.get("metric") or {}, record.get("timing") or {}
    found = {"test/metric": metric.get("mean"), "test/ci95": metric.get("ci95"),
             "throughput/meta_train_tasks_per_s": timing.get("meta_train_tasks_per_s"),
             "throughput/test_tasks_per_s": timing.get("test_tasks_per_s"),
             "memory/peak_mb": (record.get("memory") or {}).get("peak_mb")}
    return {name: float(value) for name, value in found.items() if value is not None}


def _run_name(record: dict[str, Any]) -> str:
    return (f"{record['suite']['name']}-{record['suite']['tier']}-{record['algorithm']['name']}-"
            f"seed{record['seeds']['training_seed']}-{record['run_id'][:8]}")


class TensorBoardTracker:
    def __init__(self, where: str, record: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(Path(where) / _run_name(record)))
        self.writer.add_text("bench/run", json.dumps({**run_tags(record),
                                                      "hyperparameters": record["algorithm"]["hyperparameters"]}))

    def curve_point(self, point: dict[str, Any]) -> None:
        self.writer.add_scalar("train/loss", point["train_loss"], point["iteration"])
        if point["val_metric"] is not None:
            self.writer.add_scalar("val/metric", point["val_metric"], point["iteration"])
        self.writer.flush()

    def finish(self, record: dict[str, Any]) -> None:
        step = (record.get("training") or {}).get("meta_iterations", 0)
        for name, value in final_metrics(record).items():
            self.writer.add_scalar(name, value, step)
        hparams = {k: v if isinstance(v, int | float | str | bool) else json.dumps(v)
                   for k, v in record["algorithm"]["hyperparameters"].items()}
        self.writer.add_hparams(hparams, {f"hparam/{k}": v for k, v in final_metrics(record).items()},
                                run_name=".")  # into this run's folder, not a new one
        self.writer.add_text("bench/status", record["status"])
        self.writer.close()


class MLflowTracker:
    def __init__(self, where: str, record: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=where)
        name = f"bench/{record['suite']['name']}"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, tags=run_tags(record), run_name=_run_name(record))
        self.run_id = run.info.run_id
        for key, value in record["algorithm"]["hyperparameters"].items():
            self.client.log_param(self.run_id, key, json.dumps(value) if isinstance(value, list | dict) else value)

    def curve_point(self, point: dict[str, Any]) -> None:
        self.client.log_metric(self.run_id, "train/loss", point["train_loss"], step=point["iteration"])
        if point["val_metric"] is not None:
            self.client.log_metric(self.run_id, "val/metric", point["val_metric"], step=point["iteration"])

    def finish(self, record: dict[str, Any]) -> None:
        step = (record.get("training") or {}).get("meta_iterations", 0)
        for name, value in final_metrics(record).items():
            self.client.log_metric(self.run_id, name, value, step=step)
        self.client.set_tag(self.run_id, "bench.status", record["status"])
        self.client.set_terminated(self.run_id, "FINISHED" if record["status"] == "completed" else
                                   "KILLED" if record["status"] == "interrupted" else "FAILED")


TRACKERS: dict[str, type[TensorBoardTracker] | type[MLflowTracker]] = {
    "tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


class Trackers:
    """The run's trackers; one that raises is logged and dropped (the record is what counts)."""

    def __init__(self, targets: tuple[TrackingTarget, ...], record: dict[str, Any]) -> None:
        self.active: list[tuple[TrackingTarget, RunTracker]] = []
        for target in targets:
            try:
                self.active.append((target, TRACKERS[target.kind](target.where, record)))
            except Exception as exc:  # noqa: BLE001 (a tracker's failure must not fail the run)
                log.warning("--log %s:%s could not start (%s: %s); this run is not tracked there",
                            target.kind, target.where, type(exc).__name__, exc)

    def _each(self, call: str, value: dict[str, Any]) -> None:
        for entry in list(self.active):
            target, tracker = entry
            try:
                getattr(tracker, call)(value)
            except Exception as exc:  # noqa: BLE001
                log.warning("--log %s:%s failed (%s: %s); no more of this run goes there",
                            target.kind, target.where, type(exc).__name__, exc)
                self.active.remove(entry)

    def curve_point(self, point: dict[str, Any]) -> None:
        self._each("curve_point", point)

    def finish(self, record: dict[str, Any]) -> None:
        self._each("finish", record)
        self.active = []
