"""Runs algorithms on a suite: plan (validate everything), then train, select, test, record.

``plan_run`` checks every name, value, file and directory before any work starts, so bad input
costs nothing and changes nothing. ``execute`` runs each (algorithm, seed) pair, writing one
record per run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from bench import records
from bench.algorithms import ALGORITHMS, Algorithm, Hyperparameters, Problem
from bench.algorithms.base import parse_hparams
from bench.config import SUITE_OVERRIDABLE, Suite, load_suite
from bench.environment import environment, resolve_device
from bench.errors import BenchError, did_you_mean
from bench.execution import ExecutionOptions, apply_compile, autocast, choose_task_chunk
from bench.seeding import generator
from bench.stats import mean_ci95
from bench.tasks import TaskBatch, TaskSource, episode_hash, make_task_source
from bench.timing import PeakMemory, SegmentTimer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Overrides:
    """``--set`` values: ``suite.FIELD=VALUE`` or ``ALGORITHM.HYPERPARAMETER=VALUE``."""

    suite: dict[str, Any] = field(default_factory=dict)
    algorithms: dict[str, dict[str, Any]] = field(default_factory=dict)
    texts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, texts: list[str] | tuple[str, ...]) -> Overrides:
        suite: dict[str, Any] = {}
        algorithms: dict[str, dict[str, Any]] = {}
        for text in texts:
            key, sep, raw_value = text.partition("=")
            key = key.strip()
            # suite.FIELD or a path into one (suite.model.encoder); ALGORITHM names may hold dots (maml.l2l).
            owner, dot, name = ("suite", ".", key[len("suite."):]) if key.startswith("suite.") else key.rpartition(".")
            if not sep or not dot or not owner or not name:
                raise BenchError(
                    f"--set {text!r}: expected ALGORITHM.NAME=VALUE or suite.FIELD=VALUE, e.g. --set maml.inner_lr=0.01"
                )
            try:
                value = yaml.safe_load(raw_value) if raw_value.strip() else None
            except yaml.YAMLError:
                raise BenchError(f"--set {text!r}: cannot read value {raw_value!r}") from None
            if owner == "suite":
                field_name = name.split(".")[0]
                if field_name not in SUITE_OVERRIDABLE or not all(name.split(".")):
                    raise BenchError(f"--set {text!r}: suite has no field {field_name!r} to set; "
                                     f"{did_you_mean(field_name, SUITE_OVERRIDABLE)}")
                suite[name] = value
            else:
                ALGORITHMS.get(owner)  # raises "unknown algorithm ... did you mean"
                algorithms.setdefault(owner, {})[name] = value
        return cls(suite, algorithms, tuple(texts))


@dataclass(frozen=True)
class PlannedRun:
    algorithm: type[Algorithm]
    hparams: Hyperparameters
    seed: int


@dataclass(frozen=True)
class RunPlan:
    suite: Suite
    runs: tuple[PlannedRun, ...]
    device: torch.device
    results_dir: Path
    skipped: dict[str, str]
    episodes: Episodes | None = None  # built while planning, so impossible episode shapes fail there
    execution: ExecutionOptions = ExecutionOptions()


def resolve_algorithms(suite: Suite, requested: list[str] | None) -> tuple[list[type[Algorithm]], dict[str, str]]:
    """The algorithms to run and, for the default selection, those left out with the reason."""
    skipped: dict[str, str] = {}
    if requested:
        chosen = []
        for name in requested:
            algorithm = ALGORITHMS.get(name)
            reason = algorithm.inapplicable(suite)
            if reason is not None:
                raise BenchError(f"algorithm {name!r} does not apply to suite {suite.name!r}: {name} {reason}")
            chosen.append(algorithm)
        return chosen, skipped
    chosen = []
    for name in ALGORITHMS.names():
        algorithm = ALGORITHMS.get(name)
        reason = "excluded by the suite" if name in suite.exclude_algorithms else algorithm.inapplicable(suite)
        if reason is None:
            chosen.append(algorithm)
        else:
            skipped[name] = reason
    return chosen, skipped


def plan_run(
    suite_name: str,
    algorithms: list[str] | None = None,
    seeds: list[int] | None = None,
    tier: str | None = None,
    results_dir: Path | str = "results",
    device: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    execution: ExecutionOptions | None = None,
) -> RunPlan:
    """Resolve and validate a run; raises ``BenchError`` for any bad input, having done nothing."""
    execution = execution or ExecutionOptions()
    parsed = Overrides.parse(overrides)
    suite = load_suite(suite_name, tier=tier, overrides=parsed.suite, override_texts=parsed.texts)
    chosen, skipped = resolve_algorithms(suite, algorithms)
    chosen_names = {a.name for a in chosen}
    for name in parsed.algorithms:
        if name not in chosen_names:
            raise BenchError(f"--set {name}.*: {name} is not among the algorithms being run ({', '.join(sorted(chosen_names))})")
    for name in suite.algorithms:
        ALGORITHMS.get(name)
    runs = []
    for algorithm in chosen:
        values = {**suite.algorithms.get(algorithm.name, {}), **parsed.algorithms.get(algorithm.name, {})}
        hparams = parse_hparams(algorithm, values, "--set" if algorithm.name in parsed.algorithms else str(suite.source_file))
        for seed in seeds if seeds else suite.seeds:
            runs.append(PlannedRun(algorithm, hparams, seed))
    results_path = Path(results_dir)
    records.check_writable(results_path)
    records.load_records(results_path, suite.name)  # an unreadable stored record stops us here
    if suite.task_type == "classification":
        from bench.datasets import check_available

        check_available(suite)
    resolved = resolve_device(device)
    execution.check(chosen, {run.algorithm.name: run.hparams for run in runs}, resolved)
    try:
        episodes = Episodes(suite, resolved)
    except ValueError as exc:  # an episode shape the data cannot supply
        shape = suite.episode_shape
        raise BenchError(
            f"suite {suite.name!r} cannot make its episodes: {exc} (test episodes: {shape['eval']['ways']} ways, "
            f"{shape['eval']['shots']} shots, {shape['eval']['queries']} queries; training: {shape['train']['ways']}, "
            f"{shape['train']['shots']}, {shape['train']['queries']}); lower them with --set suite.ways=N, "
            "suite.shots=N, suite.queries=N (or suite.train_ways/train_shots/train_queries)"
        ) from None
    return RunPlan(suite, tuple(runs), resolved, results_path, skipped, episodes, execution)


class Episodes:
    """The suite's episodes on the device: training batches, and the fixed validation and test sets."""

    def __init__(self, suite: Suite, device: torch.device) -> None:
        self.suite = suite
        self.device = device
        self.source = make_task_source(suite, device)
        self._fixed: dict[str, tuple[TaskBatch, str]] = {}

    def fixed(self, split: str, n_tasks: int) -> tuple[TaskBatch, str]:
        """The first ``n_tasks`` episodes of ``split`` under the suite's episode seed, and their hash."""
        key = f"{split}/{n_tasks}"
        if key not in self._fixed:
            batch = self.source.batch(split, self.suite.episode_seed, range(n_tasks))
            self._fixed[key] = (batch.to(self.device), episode_hash(batch))
        return self._fixed[key]

    def evaluate(self, algorithm: Algorithm, split: str, n_tasks: int, steps: int) -> tuple[torch.Tensor, str]:
        """Per-task metric on the fixed episodes of ``split``, and the episodes' hash.

        Sources with an ``eval_chunk`` are materialised that many episodes at a time (image test
        sets do not fit in memory as floats); the others once, and kept.
        """
        chunk = self.source.eval_chunk
        if chunk is None:
            batch, digest = self.fixed(split, n_tasks)
            return algorithm.evaluate(batch, steps), digest
        hasher, values = hashlib.sha256(), []
        for start in range(0, n_tasks, chunk):
            batch = self.source.batch(split, self.suite.episode_seed, range(start, min(start + chunk, n_tasks)))
            batch.update_hash(hasher)
            values.append(algorithm.evaluate(batch, steps))
        return torch.cat(values), hasher.hexdigest()

    def train(self, seed: int, iteration: int) -> TaskBatch:
        size = self.suite.meta_batch_size
        return self.source.batch("train", seed, range(iteration * size, (iteration + 1) * size)).to(self.device)


def problem_for(suite: Suite, source: TaskSource) -> Problem:
    out_features = suite.ways if suite.task_type == "classification" else 1
    return Problem(suite=suite, in_shape=source.in_shape, out_features=out_features,
                   n_train_classes=getattr(source, "n_train_classes", None))


def _state_copy(algorithm: Algorithm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in algorithm.state_dict().items()}


def _base_record(plan: RunPlan, run: PlannedRun, run_id: str, episodes: Episodes) -> dict[str, Any]:
    suite = plan.suite
    return {
        "schema_version": records.SCHEMA_VERSION,
        "run_id": run_id,
        "status": "running",
        "suite": {
            "name": suite.name,
            "version": suite.version,
            "tier": suite.tier,
            "file": suite.source_file,
            "file_sha256": suite.file_sha256,
            "protocol": suite.protocol_fields(),
            "protocol_hash": suite.protocol_hash(),
            "budget": suite.budget(),
            "overrides": list(suite.overrides),
        },
        "algorithm": {
            "name": run.algorithm.name,
            "family": run.algorithm.family,
            "hyperparameters": run.hparams.model_dump(mode="json"),
            "code_version": run.algorithm.code_version(),
        },
        "seeds": {
            "training_seed": run.seed,
            "init": ["suite", suite.name, "init", run.seed],
            "train_episodes": {"split": "train", "seed": run.seed, "first_index": 0},
            "val_episodes": {"split": "val", "seed": suite.episode_seed, "count": suite.val_tasks, "sha256": None},
            "test_episodes": {"split": "test", "seed": suite.episode_seed, "count": suite.test_tasks, "sha256": None},
        },
        "environment": environment(plan.device),
        "started_at": records.utc_now(),
    }


def build_algorithm(plan: RunPlan, run: PlannedRun, episodes: Episodes) -> Algorithm:
    """The run's algorithm, initialised from its own seed, on the plan's device."""
    suite = plan.suite
    problem = problem_for(suite, episodes.source)
    return run.algorithm(run.hparams, problem, generator("suite", suite.name, "init", run.seed)).to(plan.device)


def configure_execution(algorithm: Algorithm, options: ExecutionOptions, first_batch: TaskBatch,
                        device: torch.device) -> dict[str, Any]:
    """Apply the execution options to a new algorithm; returns the record's ``execution`` entry."""
    if options.compile:
        apply_compile(algorithm)
    if hasattr(algorithm, "checkpoint_inner_steps"):
        algorithm.checkpoint_inner_steps = options.checkpoint_inner_steps
    entry = options.as_record()
    entry["checkpoint_inner_steps"] = getattr(algorithm, "checkpoint_inner_steps", None)
    entry.update(choose_task_chunk(algorithm, first_batch, device, options))
    return entry


def run_one(plan: RunPlan, run: PlannedRun, episodes: Episodes, progress: bool = True) -> dict[str, Any]:
    """Meta-train with checkpoint selection on validation episodes, test, time, and record."""
    suite, device = plan.suite, plan.device
    run_id = records.new_run_id()
    path = records.record_path(plan.results_dir, suite.name, suite.tier, run.algorithm.name, run.seed, run_id)
    record = _base_record(plan, run, run_id, episodes)
    records.write_record(path, record)
    wall_start = time.perf_counter()
    iteration = 0
    try:
        algorithm = build_algorithm(plan, run, episodes)
        record["execution"] = configure_execution(algorithm, plan.execution, episodes.train(run.seed, 0), device)
        records.write_record(path, record)
        memory = PeakMemory(device)  # after the task-chunk measurement, whose peak is not the run's
        train_timer, data_seconds = SegmentTimer(device), 0.0
        curve: list[dict[str, float]] = []
        sign = 1.0 if suite.lower_is_better else -1.0
        best_value, best_iteration, best_state = sign * math.inf, 0, _state_copy(algorithm)
        running_loss = torch.zeros((), device=device)
        eval_steps = algorithm.evaluation_steps(suite.test_inner_steps)
        bar = tqdm(total=suite.meta_iterations, desc=f"{run.algorithm.name} seed {run.seed}", disable=None if progress else True,
                   leave=False, unit="it")
        algorithm.train()
        for iteration in range(suite.meta_iterations):
            timed = iteration >= suite.warmup_iterations
            if timed:
                train_timer.start()
            data_start = time.perf_counter()
            batch = episodes.train(run.seed, iteration)
            data_seconds += time.perf_counter() - data_start if timed else 0.0
            with autocast(plan.execution, device):
                running_loss += algorithm.meta_train_step(batch, iteration)
            if timed:
                train_timer.stop()
            bar.update()
            done = iteration + 1
            if done % suite.val_every == 0 or done == suite.meta_iterations:
                mean_loss = running_loss.item() / (done - (curve[-1]["iteration"] if curve else 0))
                running_loss.zero_()
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"meta-training loss is {mean_loss} at iteration {done}")
                with autocast(plan.execution, device):
                    val_values, record["seeds"]["val_episodes"]["sha256"] = episodes.evaluate(
                        algorithm, "val", suite.val_tasks, eval_steps)
                value = val_values.mean().item()
                # JSON has no inf or NaN: a diverged validation score is stored as null.
                curve.append({"iteration": done, "wall_time_s": time.perf_counter() - wall_start,
                              "train_loss": mean_loss, "val_metric": value if math.isfinite(value) else None})
                if math.isfinite(value) and sign * value < sign * best_value:
                    best_value, best_iteration, best_state = value, done, _state_copy(algorithm)
                bar.set_postfix(loss=f"{mean_loss:.3g}", val=f"{value:.3g}")
        bar.close()
        algorithm.load_state_dict(best_state)
        test_timer = SegmentTimer(device)
        test_timer.start()
        with autocast(plan.execution, device):
            per_task, record["seeds"]["test_episodes"]["sha256"] = episodes.evaluate(
                algorithm, "test", suite.test_tasks, eval_steps)
        test_timer.stop()
        test_seconds = test_timer.seconds()
        values = per_task.double().cpu().tolist()
        if not all(math.isfinite(v) for v in values):
            raise FloatingPointError("the test metric is not finite for some tasks")
        mean, ci95 = mean_ci95(values)
        timed_iterations = suite.meta_iterations - min(suite.warmup_iterations, suite.meta_iterations)
        step_seconds = train_timer.segment_seconds()
        train_seconds = sum(step_seconds)
        # The median step resists bursts of other load on the machine: `bench check` judges speed by it.
        median_step = statistics.median(step_seconds) if step_seconds else None
        record.update(
            status="completed",
            metric={
                "name": suite.metric,
                "lower_is_better": suite.lower_is_better,
                "mean": mean,
                "ci95": ci95,
                "ci_method": "1.96 * std(ddof=0) / sqrt(n) over test episodes",
                "n_episodes": len(values),
                "inner_steps": eval_steps,
                "per_task": values,
            },
            training={
                "meta_iterations": suite.meta_iterations,
                "best_iteration": best_iteration,
                "best_val_metric": best_value if math.isfinite(best_value) else None,
                "selection": "best validation metric, checked every val_every iterations",
                "curve": curve,
            },
            timing={
                "method": train_timer.method,
                "warmup_iterations": min(suite.warmup_iterations, suite.meta_iterations),
                "timed_iterations": timed_iterations,
                "meta_train_seconds": train_seconds,
                "meta_train_tasks_per_s": timed_iterations * suite.meta_batch_size / train_seconds if train_seconds else None,
                "meta_train_median_step_s": median_step,
                "meta_train_tasks_per_s_median": suite.meta_batch_size / median_step if median_step else None,
                "data_seconds": data_seconds,
                "data_share": data_seconds / train_seconds if train_seconds else None,
                "test_seconds": test_seconds,
                "test_tasks_per_s": len(values) / test_seconds if test_seconds else None,
                "wall_time_s": time.perf_counter() - wall_start,
            },
            memory={"peak_mb": memory.peak_mb(), "kind": memory.kind},
            ended_at=records.utc_now(),
        )
    except KeyboardInterrupt:
        record.update(status="interrupted", ended_at=records.utc_now(),
                      error={"type": "KeyboardInterrupt", "message": f"interrupted at iteration {iteration}"},
                      timing={"wall_time_s": time.perf_counter() - wall_start})
        records.write_record(path, record)
        raise
    except Exception as exc:  # recorded, not swallowed: the record says failed, with the traceback
        log.error("%s seed %d failed: %s: %s", run.algorithm.name, run.seed, type(exc).__name__, exc)
        record.update(status="failed", ended_at=records.utc_now(),
                      error={"type": type(exc).__name__, "message": str(exc), "iteration": iteration,
                             "traceback": traceback.format_exc()},
                      timing={"wall_time_s": time.perf_counter() - wall_start})
    records.write_record(path, record)
    record["_path"] = str(path)
    return record


def execute(plan: RunPlan, progress: bool = True) -> list[dict[str, Any]]:
    """Run every planned (algorithm, seed); returns their records in order."""
    if plan.device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    for name, why in plan.skipped.items():
        log.info("not running %s: %s", name, why)
    episodes = plan.episodes or Episodes(plan.suite, plan.device)
    results = []
    for number, run in enumerate(plan.runs, 1):
        log.info("[%d/%d] %s on %s (%s tier), seed %d", number, len(plan.runs), run.algorithm.name,
                 plan.suite.name, plan.suite.tier, run.seed)
        record = run_one(plan, run, episodes, progress)
        if record["status"] == "completed":
            metric = record["metric"]
            log.info("    %s = %.4f +- %.4f, %.0f meta-train tasks/s, %.1f s", metric["name"], metric["mean"],
                     metric["ci95"], record["timing"]["meta_train_tasks_per_s"] or float("nan"),
                     record["timing"]["wall_time_s"])
        results.append(record)
    return results
