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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import yaml
from tqdm.auto import tqdm

from bench import records
from bench.algorithms import ALGORITHMS, Algorithm, Hyperparameters, Problem
from bench.algorithms.base import parse_hparams
from bench.algorithms.gradient import EVAL_CHUNK
from bench.config import MAX_SEED, SUITE_OVERRIDABLE, Suite, load_suite, non_finite_number, read_yaml_text
from bench.datasets import check_available
from bench.datasets.shapes import check_episode_shapes, class_sizes
from bench.errors import BenchError, did_you_mean
from bench.run.checkpoints import CHECKPOINTS, load_checkpoint, save_checkpoint
from bench.run.environment import environment, git_state, resolve_device
from bench.run.execution import (
    ExecutionOptions,
    apply_compile,
    autocast,
    choose_eval_chunk,
    choose_task_chunk,
    recorded_eval_chunk,
)
from bench.run.saved_models import MODELS, save_model
from bench.run.timing import PeakMemory, SegmentTimer
from bench.run.tracking import Trackers, TrackingTarget
from bench.run.tuned import tuned_assignment
from bench.seeding import generator
from bench.stats import mean_ci95
from bench.tasks import TaskBatch, episode_hash, make_task_source
from bench.tasks.episode_files import check_test_episodes

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
                value = read_yaml_text(raw_value) if raw_value.strip() else None
            except (yaml.YAMLError, ValueError, RecursionError):  # PyYAML's ValueError: 2024-02-30, !!int x, 5000 digits
                raise BenchError(f"--set {text!r}: cannot read value {raw_value!r}; give a number, a word, "
                                 "or a YAML list [a, b]") from None
            if owner == "suite":
                field_name = name.split(".")[0]
                if field_name not in SUITE_OVERRIDABLE or not all(name.split(".")):
                    raise BenchError(f"--set {text!r}: suite has no field {field_name!r} to set; "
                                     f"{did_you_mean(field_name, SUITE_OVERRIDABLE)}")
                suite[name] = value
            else:
                ALGORITHMS.get(owner)  # raises "unknown algorithm ... did you mean"
                if non_finite_number(value) is not None:
                    raise BenchError(f"--set {text!r}: a hyperparameter must be a finite number, not {value!r}")
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
    checked_for: str | None = None  # the executor whose check this plan passed while planning
    tracking: tuple[TrackingTarget, ...] = ()  # where each run's curve and results also go (--log)
    save_models: bool = False  # keep each run's selected weights under RESULTS/models/ (--save-model)
    # bench tune: the trial this run is (study, number); it trains and validates, and never touches the test episodes
    tuning_trial: dict[str, Any] | None = None
    tuned: dict[str, dict[str, Any]] = field(default_factory=dict)  # --tuned: per algorithm, where its values came from

    @property
    def validation_only(self) -> bool:
        return self.tuning_trial is not None


def resolve_algorithms(suite: Suite, requested: list[str] | None) -> tuple[list[type[Algorithm]], dict[str, str]]:
    """The algorithms to run and, for the default selection, those left out with the reason."""
    skipped: dict[str, str] = {}
    if requested:
        chosen = []
        for name in requested:
            algorithm = ALGORITHMS.get(name)
            reason = algorithm.inapplicable(suite)
            if reason is not None:
                # Asked for by name, so refused rather than skipped: the grid would silently lack it.
                raise BenchError(f"algorithm {name!r} does not apply to suite {suite.name!r}: {name} {reason}; leave it "
                                 "out of --algorithms (without --algorithms, every algorithm that applies runs)")
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


def check_seeds(seeds: list[int]) -> None:
    """Training seeds given to a run: distinct whole numbers in torch's seed range."""
    if not seeds:
        raise BenchError("no training seeds given; give at least one, e.g. --seeds 0")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad:
        raise BenchError(f"training seed {bad[0]!r} is not a whole number from 0 to {MAX_SEED}; give another")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise BenchError(f"training seed {repeated[0]} given twice; give each seed once")


def plan_run(
    suite_name: str,
    algorithms: list[str] | None = None,
    seeds: list[int] | None = None,
    tier: str | None = None,
    results_dir: Path | str = "results",
    device: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    execution: ExecutionOptions | None = None,
    dry_run: bool = False,
    executor: Any = None,
    log_to: list[str] | tuple[str, ...] = (),
    save_models: bool = False,
    assigned: dict[str, dict[str, Any]] | None = None,
    tuning_trial: dict[str, Any] | None = None,
    tuned: dict[str, dict[str, Any]] | None = None,
    use_tuned: bool = False,
) -> RunPlan:
    """Resolve and validate a run; raises ``BenchError`` for any bad input, having done nothing.

    Every check runs in the same order for ``validate``, ``--dry-run`` and a real run. A real run
    then reads the data (building caches: the first time, minutes) and only after that creates the
    results directory, so an error found in the data leaves nothing behind; ``dry_run`` stops
    before reading the data and writes nothing.

    ``assigned``: hyperparameters per algorithm that ``bench tune`` (a trial's values) or ``--tuned``
    (the study's best) set, over the suite file's; ``tuning_trial``: the trial this run is (it is then
    validated only); ``tuned``: per algorithm, the provenance of its ``assigned`` values;
    ``use_tuned`` (``--tuned``): both from ``bench tune``'s file for this suite and tier in ``results_dir``.
    """
    execution = execution or ExecutionOptions()
    parsed = Overrides.parse(overrides)
    suite = load_suite(suite_name, tier=tier, overrides=parsed.suite, override_texts=parsed.texts)
    if seeds is not None:
        check_seeds(seeds)
    chosen, skipped = resolve_algorithms(suite, algorithms)
    chosen_names = {a.name for a in chosen}
    if use_tuned:
        assigned, tuned = tuned_assignment(Path(results_dir), suite, sorted(chosen_names))
    for name in parsed.algorithms:
        if name not in chosen_names:
            raise BenchError(f"--set {name}.*: {name} is not among the algorithms being run ({', '.join(sorted(chosen_names))})")
        if tuned and name in tuned:
            raise BenchError(f"--set {name}.* with --tuned: the tuned hyperparameters are what that entry means; "
                             "give one or the other")
    check_suite_algorithms(suite)
    assigned = assigned or {}
    runs = []
    for algorithm in chosen:
        values = {**suite.algorithms.get(algorithm.name, {}), **assigned.get(algorithm.name, {}),
                  **parsed.algorithms.get(algorithm.name, {})}
        hparams = parse_hparams(algorithm, values, "--set" if algorithm.name in parsed.algorithms else str(suite.source_file))
        for seed in seeds if seeds else suite.seeds:
            runs.append(PlannedRun(algorithm, hparams, seed))
    results_path = Path(results_dir)
    output_dirs = (f"{suite.name}/{suite.tier}", f"{records.LOCKS}/{suite.name}", f"{CHECKPOINTS}/{suite.name}/{suite.tier}",
                   *((MODELS,) if save_models else ()))
    records.check_writable(results_path, subdirs=output_dirs, create=False)
    if results_path.exists():
        records.load_records(results_path, suite.name)  # an unreadable stored record stops us here
    check_suite_data(suite)
    resolved = resolve_device(device)
    execution.check(chosen, {run.algorithm.name: run.hparams for run in runs}, resolved)
    episodes = None if dry_run else Episodes(suite, resolved)
    tracking = tuple(TrackingTarget.parse(text) for text in log_to)  # an unknown or missing tracker: before any work
    plan = RunPlan(suite, tuple(runs), resolved, results_path, skipped, episodes, execution, tracking=tracking,
                   save_models=save_models, tuning_trial=tuning_trial, tuned=dict(tuned or {}))
    if executor is not None:
        executor.check(plan)  # e.g. Ray: resources no node has
        plan = replace(plan, checked_for=executor.name)
    if not dry_run:
        records.check_writable(results_path, subdirs=output_dirs)
    return plan


def check_suite_algorithms(suite: Suite) -> None:
    """The suite file's ``algorithms``, ``exclude_algorithms`` and ``search`` name registered algorithms,
    with valid hyperparameters and search spaces: what ``run`` would refuse, ``validate`` refuses too."""
    for key, names in (("algorithms", list(suite.algorithms)), ("exclude_algorithms", suite.exclude_algorithms)):
        for name in names:
            try:
                algorithm = ALGORITHMS.get(name)
            except BenchError as exc:
                raise BenchError(f"{suite.source_file}: {key}: {exc}") from None
            if key == "algorithms":
                parse_hparams(algorithm, suite.algorithms[name], f"{suite.source_file}: algorithms")
    for name in suite.search:
        try:
            algorithm = ALGORITHMS.get(name)
        except BenchError as exc:
            raise BenchError(f"{suite.source_file}: search: {exc}") from None
        algorithm.search_space(suite)


def check_suite_data(suite: Suite, sizes: dict[str, dict[str, int]] | None = None) -> None:
    """The data files are there and the splits can supply the suite's episodes, drawn or from its
    episode file (cheap: no pixel is decoded). ``sizes``: the suite's ``class_sizes``, when the
    caller has checked the files and counted them already."""
    if suite.task_type == "classification":
        if sizes is None:
            check_available(suite)
            sizes = class_sizes(suite)
        check_episode_shapes(suite, sizes)
        check_test_episodes(suite, sizes)


class Episodes:
    """The suite's episodes on the device: training batches, and the fixed validation and test sets."""

    def __init__(self, suite: Suite, device: torch.device) -> None:
        self.suite = suite
        self.device = device
        self.source = make_task_source(suite, device)
        self._fixed: dict[str, tuple[TaskBatch, str]] = {}
        self._contents: dict[str, str] = {}

    def fixed(self, split: str, n_tasks: int) -> tuple[TaskBatch, str]:
        """The first ``n_tasks`` episodes of ``split`` under the suite's episode seed, and their hash."""
        key = f"{split}/{n_tasks}"
        if key not in self._fixed:
            batch = self.source.batch(split, self.suite.episode_seed, range(n_tasks))
            self._fixed[key] = (batch.to(self.device), episode_hash(batch))
        return self._fixed[key]

    def _chunks(self, split: str, n_tasks: int) -> Iterator[TaskBatch]:
        """The fixed episodes of ``split``: kept whole, or materialised ``eval_chunk`` at a time
        (image test sets do not fit in memory as floats)."""
        chunk = self.source.eval_chunk
        if chunk is None:
            yield self.fixed(split, n_tasks)[0]
            return
        for start in range(0, n_tasks, chunk):
            yield self.source.batch(split, self.suite.episode_seed, range(start, min(start + chunk, n_tasks)))

    def evaluate(self, algorithm: Algorithm, split: str, n_tasks: int, steps: int) -> tuple[torch.Tensor, str]:
        """Per-task metric on the fixed episodes of ``split``, and the hash of what determines them."""
        if self.source.eval_chunk is None:
            batch, digest = self.fixed(split, n_tasks)
            return algorithm.evaluate(batch, steps), digest
        hasher, values = hashlib.sha256(), []
        for batch in self._chunks(split, n_tasks):
            batch.update_hash(hasher)
            values.append(algorithm.evaluate(batch, steps))
        return torch.cat(values), hasher.hexdigest()

    def evaluation_sample(self) -> TaskBatch:
        """Validation episodes as many as one evaluation call adapts (what the evaluation chunk is measured on)."""
        n_tasks = min(self.source.eval_chunk or self.suite.test_tasks, self.suite.test_tasks, EVAL_CHUNK)
        return self.source.batch("val", self.suite.episode_seed, range(n_tasks)).to(self.device)

    def contents_digest(self, split: str, n_tasks: int) -> str:
        """SHA-256 of the fixed episodes' tensors as the algorithms receive them; computed once per
        set and outside every timer (on a GPU it copies the episodes to the host)."""
        key = f"{split}/{n_tasks}"
        if key not in self._contents:
            hasher = hashlib.sha256()
            for batch in self._chunks(split, n_tasks):
                batch.update_contents_hash(hasher)
            self._contents[key] = hasher.hexdigest()
        return self._contents[key]

    def train(self, seed: int, iteration: int) -> TaskBatch:
        size = self.suite.meta_batch_size
        return self.source.batch("train", seed, range(iteration * size, (iteration + 1) * size)).to(self.device)


class HasInputShape(Protocol):
    """What ``problem_for`` reads of a task source."""

    @property
    def in_shape(self) -> tuple[int, ...]: ...


def problem_for(suite: Suite, source: HasInputShape) -> Problem:
    out_features = 1
    if suite.task_type == "classification":
        assert suite.ways is not None, "a classification suite has ways (validated)"
        out_features = suite.ways
    return Problem(suite=suite, in_shape=source.in_shape, out_features=out_features,
                   n_train_classes=getattr(source, "n_train_classes", None))


def _state_copy(algorithm: Algorithm) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in algorithm.state_dict().items()}


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of every tensor's name, dtype, shape and bytes: equal exactly when two models are bit-identical."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _base_record(plan: RunPlan, run: PlannedRun, run_id: str) -> dict[str, Any]:
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
        } | ({"tuned": plan.tuned[run.algorithm.name]} if run.algorithm.name in plan.tuned else {}),
        "seeds": {
            "training_seed": run.seed,
            "init": ["suite", suite.name, "init", run.seed],
            "train_episodes": {"split": "train", "seed": run.seed, "first_index": 0},
            "val_episodes": {"split": "val", "seed": suite.episode_seed, "count": suite.val_tasks, "sha256": None,
                             "contents_sha256": None},
            "test_episodes": {"split": "test", "seed": suite.episode_seed, "count": suite.test_tasks, "sha256": None,
                              "contents_sha256": None},
        },
        "environment": environment(plan.device),
        "started_at": records.utc_now(),
    } | ({"tuning_trial": plan.tuning_trial} if plan.tuning_trial is not None else {}) | (
        {"inputs": notes} if (notes := getattr(plan.episodes.source if plan.episodes else None, "input_notes", None))
        else {})


def build_algorithm(plan: RunPlan, run: PlannedRun, episodes: Episodes) -> Algorithm:
    """The run's algorithm, initialised from its own seed, on the plan's device."""
    suite = plan.suite
    problem = problem_for(suite, episodes.source)
    return run.algorithm(run.hparams, problem, generator("suite", suite.name, "init", run.seed)).to(plan.device)


def evaluation_episodes(suite: Suite, learns: bool = True) -> int:
    """Episodes one run adapts at test time: each validation pass (one for a method that learns nothing) and the test set."""
    return suite.test_tasks + suite.val_tasks * (math.ceil(suite.meta_iterations / suite.val_every) if learns else 1)


def configure_execution(algorithm: Algorithm, options: ExecutionOptions, first_batch: TaskBatch,
                        device: torch.device, earlier: dict[str, Any] | None = None,
                        evaluation: tuple[Callable[[], TaskBatch], int, int | None] | None = None) -> dict[str, Any]:
    """Apply the execution options to a new algorithm; returns the record's ``execution`` entry.

    ``earlier`` is the entry of the run being resumed: its chunks are kept, so the resumed part
    takes the same floating-point path as the part before the checkpoint. ``evaluation``
    (what draws evaluation-shaped episodes, inner steps, the episodes the plan adapts with this
    algorithm) is what the evaluation chunk is chosen on; the episodes are drawn only for an
    algorithm that chunks its evaluation, and not on a resume."""
    if options.compile:
        apply_compile(algorithm)
    if hasattr(algorithm, "checkpoint_inner_steps"):
        setattr(algorithm, "checkpoint_inner_steps", options.checkpoint_inner_steps)  # noqa: B010 (not every algorithm has it)
    if earlier is not None and "task_chunk" in earlier:
        if earlier["task_chunk"] is not None:
            algorithm.task_chunk = earlier["task_chunk"]
        if (eval_chunk := recorded_eval_chunk(earlier)) is not None and hasattr(algorithm, "eval_chunk"):
            setattr(algorithm, "eval_chunk", eval_chunk)  # noqa: B010 (not every algorithm has it)
        return earlier
    entry = options.as_record()
    entry["checkpoint_inner_steps"] = getattr(algorithm, "checkpoint_inner_steps", None)
    entry.update(choose_task_chunk(algorithm, first_batch, device, options))
    if evaluation is not None and getattr(algorithm, "chunks_evaluation", lambda: False)():
        sample, steps, planned = evaluation
        entry.update(choose_eval_chunk(algorithm, sample(), steps, device, options, planned))
    return entry


def new_record(plan: RunPlan, run: PlannedRun) -> tuple[Path, dict[str, Any]]:
    """A new run's record (status ``running``) and the path it is filed under."""
    run_id = records.new_run_id()
    path = records.record_path(plan.results_dir, plan.suite.name, str(plan.suite.tier), run.algorithm.name, run.seed, run_id)
    return path, _base_record(plan, run, run_id)


class Diverged(Exception):
    """Meta-training produced a non-finite loss (or the test metric is not finite)."""

    def __init__(self, iteration: int, phase: str, value: float) -> None:
        super().__init__(f"{phase} is {value} at iteration {iteration}")
        self.iteration, self.phase, self.value = iteration, phase, value


DIVERGENCE_CHECK_EVERY = 10  # meta-iterations between looks at the loss (each look waits for the device)


def train_and_test(plan: RunPlan, run: PlannedRun, episodes: Episodes, record: dict[str, Any],
                   checkpoint: Path | None = None, progress: bool = True,
                   on_configured: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Meta-train with checkpoint selection on validation episodes, test and time; fills ``record``.

    Writes no record: the caller (the executor's driver) does. With ``checkpoint``, training state
    is saved there every ``execution.checkpoint_every`` meta-iterations and, if a checkpoint is
    already there, training continues from it. The returned record's status is ``completed``,
    ``diverged`` (non-finite loss: stopped, with the iteration) or ``failed`` (with the traceback);
    a KeyboardInterrupt marks it ``interrupted`` and propagates.
    """
    previous_threads = torch.get_num_threads()
    if plan.execution.threads is not None:
        torch.set_num_threads(plan.execution.threads)
    record["environment"]["torch_threads"] = torch.get_num_threads()  # the run's, not the planning process's
    try:
        return TrainingLoop(plan, run, episodes, record, checkpoint, progress, on_configured).run_to_end()
    finally:
        torch.set_num_threads(previous_threads)


@dataclass
class TrainingState:
    """What a checkpoint holds: the record's execution choices, the algorithm's training state
    (parameters, buffers, optimiser, generators), where meta-training stands and what it has
    measured so far. Its fields are the checkpoint's keys: ``to_checkpoint`` and ``from_checkpoint``
    are the only places that layout is written and read."""

    iteration: int  # meta-iterations done
    execution: dict[str, Any]
    training: dict[str, Any]
    curve: list[dict[str, Any]]
    best_value: float
    best_iteration: int
    best_state: dict[str, torch.Tensor]
    running_loss: torch.Tensor  # the loss summed since the last validation, on the host
    train_segments: list[float]
    data_seconds: float
    peak_mb: float
    wall_time_s: float
    val_sha256: str | None
    diverged_at: int = -1  # the first non-finite loss's iteration + 1 (absent from checkpoints before it was kept)

    def to_checkpoint(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainingState:
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})


class TrainingLoop:
    """One run: meta-train with model selection on validation episodes, then test and time; fills ``record``.

    ``run_to_end`` is the whole of it; each stage is a short method: ``set_up`` (build the
    algorithm, choose how it executes, continue from a checkpoint), ``train_step``,
    ``check_divergence``, ``validate`` (and keep the best state), ``save_checkpoint``, ``test``
    and ``complete_record``. The loop's progress lives on the object, and ``state`` /
    ``resume_from`` convert it to and from a ``TrainingState``."""

    def __init__(self, plan: RunPlan, run: PlannedRun, episodes: Episodes, record: dict[str, Any],
                 checkpoint: Path | None = None, progress: bool = True,
                 on_configured: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.plan, self.run, self.episodes, self.record = plan, run, episodes, record
        self.suite, self.device, self.options = plan.suite, plan.device, plan.execution
        self.checkpoint, self.progress, self.on_configured = checkpoint, progress, on_configured
        self.wall_start = time.perf_counter()
        self.iteration = 0  # the meta-iteration in progress (for interruption and failure messages)
        self.done = 0  # meta-iterations done
        self.curve: list[dict[str, Any]] = []
        self.sign = 1.0 if self.suite.lower_is_better else -1.0
        self.trackers = Trackers(plan.tracking, record)  # none without --log

    def run_to_end(self) -> dict[str, Any]:
        """The record's status is ``completed``, ``diverged`` (non-finite loss: stopped, with the
        iteration) or ``failed`` (with the traceback); a KeyboardInterrupt marks it ``interrupted``
        and propagates."""
        try:
            self.set_up()
            self.train()
            if self.plan.validation_only:
                self.complete_trial_record()
            else:
                per_task, test_seconds = self.test()
                self.complete_record(per_task, test_seconds)
        except KeyboardInterrupt:
            self.record.update(status="interrupted", ended_at=records.utc_now(),
                               error={"type": "KeyboardInterrupt", "message": f"interrupted at iteration {self.iteration}"},
                               timing={"wall_time_s": self.wall_seconds()})
            self.trackers.finish(self.record)
            raise
        except Diverged as exc:  # recorded as such, and kept out of leaderboards (only completed runs count)
            log.error("%s seed %d diverged: %s", self.run.algorithm.name, self.run.seed, exc)
            self.record.update(status="diverged", ended_at=records.utc_now(),
                               diverged={"iteration": exc.iteration, "what": exc.phase, "value": str(exc.value)},
                               training={"meta_iterations": self.suite.meta_iterations,
                                         "stopped_at_iteration": self.iteration + 1, "curve": self.curve},
                               error={"type": "Diverged", "message": str(exc), "iteration": exc.iteration},
                               timing={"wall_time_s": self.wall_seconds()})
        except Exception as exc:  # recorded, not swallowed: the record says failed, with the traceback
            log.error("%s seed %d failed: %s: %s", self.run.algorithm.name, self.run.seed, type(exc).__name__, exc)
            self.record.update(status="failed", ended_at=records.utc_now(),
                               error={"type": type(exc).__name__, "message": str(exc), "iteration": self.iteration,
                                      "traceback": traceback.format_exc()},
                               timing={"wall_time_s": self.wall_seconds()})
        self.trackers.finish(self.record)
        return self.record

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.wall_start

    def set_up(self) -> None:
        suite, run, device = self.suite, self.run, self.device
        self.algorithm = build_algorithm(self.plan, run, self.episodes)
        saved = load_checkpoint(self.checkpoint) if self.checkpoint is not None else None
        same_algorithm = sum(r.algorithm.name == run.algorithm.name for r in self.plan.runs)
        planned = evaluation_episodes(suite, self.algorithm.learns) * same_algorithm
        self.eval_steps = self.algorithm.evaluation_steps(suite.test_inner_steps)
        self.record["execution"] = configure_execution(
            self.algorithm, self.options, self.episodes.train(run.seed, 0), device,
            saved["execution"] if saved is not None else None, (self.episodes.evaluation_sample, self.eval_steps, planned))
        self.memory = PeakMemory(device)  # after the task-chunk measurement, whose peak is not the run's
        self.train_timer, self.data_seconds = SegmentTimer(device), 0.0
        self.best_value, self.best_iteration, self.best_state = self.sign * math.inf, 0, _state_copy(self.algorithm)
        self.running_loss = torch.zeros((), device=device)
        # The first non-finite loss's iteration, kept on the device: looking at it every step would sync every step.
        self.diverged_at = torch.full((), -1, dtype=torch.long, device=device)
        self.earlier_peak_mb = 0.0
        if saved is not None:
            self.resume_from(TrainingState.from_checkpoint(saved))
        if self.on_configured is not None:  # written now, so a continuation interrupted again keeps this one's entry
            self.on_configured(self.record)

    def state(self) -> TrainingState:
        return TrainingState(
            iteration=self.done, execution=self.record["execution"], training=self.algorithm.training_state(),
            curve=self.curve, best_value=self.best_value, best_iteration=self.best_iteration, best_state=self.best_state,
            running_loss=self.running_loss.detach().cpu(), train_segments=self.train_timer.segment_seconds(),
            data_seconds=self.data_seconds, peak_mb=self.peak_mb(), wall_time_s=self.wall_seconds(),
            val_sha256=self.record["seeds"]["val_episodes"]["sha256"], diverged_at=int(self.diverged_at.item()))

    def resume_from(self, saved: TrainingState) -> None:
        self.algorithm.load_training_state(saved.training)
        self.done, self.curve = saved.iteration, saved.curve
        self.best_value, self.best_iteration, self.best_state = saved.best_value, saved.best_iteration, saved.best_state
        self.running_loss = saved.running_loss.to(self.device)
        self.train_timer.restore(saved.train_segments)
        self.data_seconds, self.earlier_peak_mb = saved.data_seconds, saved.peak_mb
        self.wall_start -= saved.wall_time_s
        self.record["seeds"]["val_episodes"]["sha256"] = saved.val_sha256
        self.diverged_at.fill_(saved.diverged_at)  # a non-finite loss before the checkpoint, not yet looked at
        # The resuming process's code and place: the record's `environment` is the first process's.
        self.record.setdefault("resumed", []).append({"at_iteration": saved.iteration, "at": records.utc_now(),
                                                      "executor": self.record.get("executor"),
                                                      "git_commit": git_state().get("commit")})
        log.info("%s seed %d: continuing from its checkpoint at iteration %d", self.run.algorithm.name, self.run.seed,
                 saved.iteration)

    def peak_mb(self) -> float:
        return max(self.earlier_peak_mb, self.memory.peak_mb())

    def train(self) -> None:
        suite = self.suite
        every = self.options.checkpoint_every if self.options.checkpoint_every is not None else suite.val_every
        check_every = min(DIVERGENCE_CHECK_EVERY, suite.val_every)
        bar = tqdm(total=suite.meta_iterations, initial=self.done, desc=f"{self.run.algorithm.name} seed {self.run.seed}",
                   disable=None if self.progress else True, leave=False, unit="it")
        self.algorithm.train()
        for iteration in range(self.done, suite.meta_iterations):
            self.iteration = iteration
            self.train_step(iteration)
            bar.update()
            self.done = done = iteration + 1
            # A method that learns nothing scores the same at every check: it validates once, at the end.
            validating = done == suite.meta_iterations or (self.algorithm.learns and done % suite.val_every == 0)
            if done % check_every == 0 or validating:
                self.check_divergence()
            if validating:
                bar.set_postfix(self.validate())
            if self.checkpoint is not None and every and done % every == 0 and done < suite.meta_iterations:
                save_checkpoint(self.checkpoint, self.state().to_checkpoint())
        bar.close()

    def train_step(self, iteration: int) -> None:
        """One timed meta-training step (after the warm-up iterations); the data share is timed apart."""
        timed = iteration >= self.suite.warmup_iterations
        if timed:
            self.train_timer.start()
        data_start = time.perf_counter()
        batch = self.episodes.train(self.run.seed, iteration)
        self.data_seconds += time.perf_counter() - data_start if timed else 0.0
        with autocast(self.options, self.device):
            loss = torch.as_tensor(self.algorithm.meta_train_step(batch, iteration), device=self.device).detach()
        if timed:
            self.train_timer.stop()
        self.running_loss += loss
        self.diverged_at = torch.where((self.diverged_at < 0) & ~torch.isfinite(loss), iteration + 1, self.diverged_at)

    def check_divergence(self) -> None:
        if self.diverged_at.item() >= 0:
            raise Diverged(int(self.diverged_at.item()), "the meta-training loss", _first_bad(self.running_loss))

    def validate(self) -> dict[str, str]:
        """Score the validation episodes, extend the curve, keep the state if it is the best; the progress bar's figures."""
        done, suite = self.done, self.suite
        mean_loss = self.running_loss.item() / (done - (self.curve[-1]["iteration"] if self.curve else 0))
        self.running_loss.zero_()
        with autocast(self.options, self.device):
            val_values, self.record["seeds"]["val_episodes"]["sha256"] = self.episodes.evaluate(
                self.algorithm, "val", suite.val_tasks, self.eval_steps)
        value = val_values.mean().item()
        # JSON has no inf or NaN: a non-finite validation score is stored as null.
        self.curve.append({"iteration": done, "wall_time_s": self.wall_seconds(),
                           "train_loss": mean_loss, "val_metric": value if math.isfinite(value) else None})
        self.trackers.curve_point(self.curve[-1])
        if math.isfinite(value) and self.sign * value < self.sign * self.best_value:
            self.best_value, self.best_iteration, self.best_state = value, done, _state_copy(self.algorithm)
        return {"loss": f"{mean_loss:.3g}", "val": f"{value:.3g}"}

    def test(self) -> tuple[list[float], float]:
        """The selected state's per-episode test metric, and the seconds it took."""
        suite, seeds = self.suite, self.record["seeds"]
        self.algorithm.load_state_dict(self.best_state)
        test_timer = SegmentTimer(self.device)
        test_timer.start()
        with autocast(self.options, self.device):
            per_task, seeds["test_episodes"]["sha256"] = self.episodes.evaluate(
                self.algorithm, "test", suite.test_tasks, self.eval_steps)
        test_timer.stop()
        test_seconds = test_timer.seconds()
        # The episode hashes above cover what determines the episodes (data key and drawn indices);
        # these cover the bytes the algorithm read, so a differently decoded or damaged copy of the
        # data shows as other contents of the same episodes.
        for split, n_tasks in (("val", suite.val_tasks), ("test", suite.test_tasks)):
            seeds[f"{split}_episodes"]["contents_sha256"] = self.episodes.contents_digest(split, n_tasks)
        values = per_task.double().cpu().tolist()
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise Diverged(suite.meta_iterations, f"the test metric of {len(bad)} of {len(values)} episodes", bad[0])
        return values, test_seconds

    def complete_record(self, values: list[float], test_seconds: float) -> None:
        suite = self.suite
        mean, ci95 = mean_ci95(values)
        timed_iterations = suite.meta_iterations - min(suite.warmup_iterations, suite.meta_iterations)
        step_seconds = self.train_timer.segment_seconds()
        if not self.algorithm.learns:  # its "training" is a no-op: a tasks/s figure would mean nothing
            timed_iterations, step_seconds = 0, []
        train_seconds = sum(step_seconds)
        # The median step resists bursts of other load on the machine: `bench check` judges speed by it.
        median_step = statistics.median(step_seconds) if step_seconds else None
        self.record.update(
            status="completed",
            metric={
                "name": suite.metric,
                "lower_is_better": suite.lower_is_better,
                "mean": mean,
                "ci95": ci95,
                "ci_method": "1.96 * std(ddof=0) / sqrt(n) over test episodes",
                "n_episodes": len(values),
                "inner_steps": self.eval_steps,
                "per_task": values,
            },
            training=self.training_entry(
                "best validation metric, checked every val_every iterations" if self.algorithm.learns
                else "none: nothing is trained (validated once, at the end)",
                state_sha256=state_sha256(self.best_state)),  # the selected model's bits (bench reproduce compares them)
            timing={
                "method": self.train_timer.method,
                "warmup_iterations": min(suite.warmup_iterations, suite.meta_iterations),
                "timed_iterations": timed_iterations,
                "meta_train_seconds": train_seconds,
                "meta_train_tasks_per_s": timed_iterations * suite.meta_batch_size / train_seconds if train_seconds else None,
                "meta_train_median_step_s": median_step,
                "meta_train_tasks_per_s_median": suite.meta_batch_size / median_step if median_step else None,
                "data_seconds": self.data_seconds,
                "data_share": self.data_seconds / train_seconds if train_seconds else None,
                "test_seconds": test_seconds,
                "test_tasks_per_s": len(values) / test_seconds if test_seconds else None,
                "wall_time_s": self.wall_seconds(),
            },
            memory={"peak_mb": self.peak_mb(), "kind": self.memory.kind},
            ended_at=records.utc_now(),
        )
        if self.plan.save_models:
            self.record["saved_model"] = save_model(self.best_state, self.plan.results_dir, self.algorithm.problem)

    def training_entry(self, selection: str, **extra: Any) -> dict[str, Any]:
        """The record's ``training``: its length, the selected iteration and score, how it was selected, the curve."""
        return {"meta_iterations": self.suite.meta_iterations, "best_iteration": self.best_iteration,
                "best_val_metric": self.best_value if math.isfinite(self.best_value) else None,
                "selection": selection, **extra, "curve": self.curve}

    def complete_trial_record(self) -> None:
        """A tuning trial's record: its validation curve and best validation metric; no test metric."""
        self.record.update(
            status="completed",
            training=self.training_entry(
                "a tuning trial: scored by its best validation metric; the test episodes are not evaluated"),
            timing={"method": self.train_timer.method, "meta_train_seconds": sum(self.train_timer.segment_seconds()),
                    "wall_time_s": self.wall_seconds()},
            memory={"peak_mb": self.peak_mb(), "kind": self.memory.kind},
            ended_at=records.utc_now(),
        )


def _first_bad(running_loss: torch.Tensor) -> float:
    value = running_loss.item()
    return value if not math.isfinite(value) else math.nan
