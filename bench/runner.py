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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from bench import records
from bench.algorithms import ALGORITHMS, Algorithm, Hyperparameters, Problem
from bench.algorithms.base import parse_hparams
from bench.algorithms.gradient import EVAL_CHUNK
from bench.checkpoints import CHECKPOINTS, load_checkpoint, save_checkpoint
from bench.config import MAX_SEED, SUITE_OVERRIDABLE, Suite, load_suite, read_yaml_text
from bench.environment import environment, git_state, resolve_device
from bench.errors import BenchError, did_you_mean
from bench.execution import ExecutionOptions, apply_compile, autocast, choose_eval_chunk, choose_task_chunk, recorded_eval_chunk
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
                from bench.config import non_finite_number

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
) -> RunPlan:
    """Resolve and validate a run; raises ``BenchError`` for any bad input, having done nothing.

    Every check runs in the same order for ``validate``, ``--dry-run`` and a real run. A real run
    then reads the data (building caches: the first time, minutes) and only after that creates the
    results directory, so an error found in the data leaves nothing behind; ``dry_run`` stops
    before reading the data and writes nothing.
    """
    execution = execution or ExecutionOptions()
    parsed = Overrides.parse(overrides)
    suite = load_suite(suite_name, tier=tier, overrides=parsed.suite, override_texts=parsed.texts)
    if seeds is not None:
        check_seeds(seeds)
    chosen, skipped = resolve_algorithms(suite, algorithms)
    chosen_names = {a.name for a in chosen}
    for name in parsed.algorithms:
        if name not in chosen_names:
            raise BenchError(f"--set {name}.*: {name} is not among the algorithms being run ({', '.join(sorted(chosen_names))})")
    check_suite_algorithms(suite)
    runs = []
    for algorithm in chosen:
        values = {**suite.algorithms.get(algorithm.name, {}), **parsed.algorithms.get(algorithm.name, {})}
        hparams = parse_hparams(algorithm, values, "--set" if algorithm.name in parsed.algorithms else str(suite.source_file))
        for seed in seeds if seeds else suite.seeds:
            runs.append(PlannedRun(algorithm, hparams, seed))
    results_path = Path(results_dir)
    output_dirs = (f"{suite.name}/{suite.tier}", f"{records.LOCKS}/{suite.name}", f"{CHECKPOINTS}/{suite.name}/{suite.tier}")
    records.check_writable(results_path, subdirs=output_dirs, create=False)
    if results_path.exists():
        records.load_records(results_path, suite.name)  # an unreadable stored record stops us here
    check_suite_data(suite)
    resolved = resolve_device(device)
    execution.check(chosen, {run.algorithm.name: run.hparams for run in runs}, resolved)
    episodes = None if dry_run else Episodes(suite, resolved)
    plan = RunPlan(suite, tuple(runs), resolved, results_path, skipped, episodes, execution)
    if executor is not None:
        executor.check(plan)  # e.g. Ray: resources no node has
    if not dry_run:
        records.check_writable(results_path, subdirs=output_dirs)
    return plan


def check_suite_algorithms(suite: Suite) -> None:
    """The suite file's ``algorithms`` and ``exclude_algorithms`` name registered algorithms, with
    valid hyperparameters: what ``run`` would refuse, ``validate`` refuses too."""
    for key, names in (("algorithms", list(suite.algorithms)), ("exclude_algorithms", suite.exclude_algorithms)):
        for name in names:
            try:
                algorithm = ALGORITHMS.get(name)
            except BenchError as exc:
                raise BenchError(f"{suite.source_file}: {key}: {exc}") from None
            if key == "algorithms":
                parse_hparams(algorithm, suite.algorithms[name], f"{suite.source_file}: algorithms")


def check_suite_data(suite: Suite) -> None:
    """The data files are there and the splits can supply the suite's episodes (cheap: no pixel is decoded)."""
    if suite.task_type == "classification":
        from bench.datasets import check_available
        from bench.datasets.shapes import check_episode_shapes

        check_available(suite)
        check_episode_shapes(suite)


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

    def _chunks(self, split: str, n_tasks: int):
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


def problem_for(suite: Suite, source: TaskSource) -> Problem:
    out_features = suite.ways if suite.task_type == "classification" else 1
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
        },
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
    }


def build_algorithm(plan: RunPlan, run: PlannedRun, episodes: Episodes) -> Algorithm:
    """The run's algorithm, initialised from its own seed, on the plan's device."""
    suite = plan.suite
    problem = problem_for(suite, episodes.source)
    return run.algorithm(run.hparams, problem, generator("suite", suite.name, "init", run.seed)).to(plan.device)


def evaluation_episodes(suite: Suite) -> int:
    """Episodes one run adapts at test time: each validation pass and the test set."""
    return suite.test_tasks + suite.val_tasks * math.ceil(suite.meta_iterations / suite.val_every)


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
        algorithm.checkpoint_inner_steps = options.checkpoint_inner_steps
    if earlier is not None and "task_chunk" in earlier:
        if earlier["task_chunk"] is not None:
            algorithm.task_chunk = earlier["task_chunk"]
        if (eval_chunk := recorded_eval_chunk(earlier)) is not None and hasattr(algorithm, "eval_chunk"):
            algorithm.eval_chunk = eval_chunk
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
        return _train_and_test(plan, run, episodes, record, checkpoint, progress, on_configured)
    finally:
        torch.set_num_threads(previous_threads)


def _train_and_test(plan: RunPlan, run: PlannedRun, episodes: Episodes, record: dict[str, Any],
                    checkpoint: Path | None, progress: bool,
                    on_configured: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
    suite, device, options = plan.suite, plan.device, plan.execution
    wall_start = time.perf_counter()
    iteration = 0
    try:
        algorithm = build_algorithm(plan, run, episodes)
        saved = load_checkpoint(checkpoint) if checkpoint is not None else None
        planned = evaluation_episodes(suite) * sum(r.algorithm.name == run.algorithm.name for r in plan.runs)
        record["execution"] = configure_execution(
            algorithm, options, episodes.train(run.seed, 0), device, saved["execution"] if saved is not None else None,
            (episodes.evaluation_sample, algorithm.evaluation_steps(suite.test_inner_steps), planned))
        memory = PeakMemory(device)  # after the task-chunk measurement, whose peak is not the run's
        train_timer, data_seconds = SegmentTimer(device), 0.0
        curve: list[dict[str, Any]] = []
        sign = 1.0 if suite.lower_is_better else -1.0
        best_value, best_iteration, best_state = sign * math.inf, 0, _state_copy(algorithm)
        running_loss = torch.zeros((), device=device)
        first = 0
        earlier_peak_mb, earlier_wall_s = 0.0, 0.0
        if saved is not None:
            algorithm.load_training_state(saved["training"])
            first, curve = saved["iteration"], saved["curve"]
            best_value, best_iteration, best_state = saved["best_value"], saved["best_iteration"], saved["best_state"]
            running_loss = saved["running_loss"].to(device)
            train_timer.restore(saved["train_segments"])
            data_seconds, earlier_peak_mb, earlier_wall_s = saved["data_seconds"], saved["peak_mb"], saved["wall_time_s"]
            wall_start -= earlier_wall_s
            record["seeds"]["val_episodes"]["sha256"] = saved["val_sha256"]
            # The resuming process's code and place: the record's `environment` is the first process's.
            record.setdefault("resumed", []).append({"at_iteration": first, "at": records.utc_now(),
                                                     "executor": record.get("executor"),
                                                     "git_commit": git_state().get("commit")})
            log.info("%s seed %d: continuing from its checkpoint at iteration %d", run.algorithm.name, run.seed, first)
        if on_configured is not None:  # written now, so a continuation interrupted again keeps this one's entry
            on_configured(record)
        every = options.checkpoint_every if options.checkpoint_every is not None else suite.val_every
        check_every = min(DIVERGENCE_CHECK_EVERY, suite.val_every)
        # The first non-finite loss's iteration, kept on the device: looking at it every step would sync every step.
        diverged_at = torch.full((), -1, dtype=torch.long, device=device)
        if saved is not None:  # a non-finite loss before the checkpoint, not yet looked at
            diverged_at.fill_(saved.get("diverged_at", -1))
        eval_steps = algorithm.evaluation_steps(suite.test_inner_steps)
        bar = tqdm(total=suite.meta_iterations, initial=first, desc=f"{run.algorithm.name} seed {run.seed}",
                   disable=None if progress else True, leave=False, unit="it")
        algorithm.train()
        for iteration in range(first, suite.meta_iterations):
            timed = iteration >= suite.warmup_iterations
            if timed:
                train_timer.start()
            data_start = time.perf_counter()
            batch = episodes.train(run.seed, iteration)
            data_seconds += time.perf_counter() - data_start if timed else 0.0
            with autocast(options, device):
                loss = torch.as_tensor(algorithm.meta_train_step(batch, iteration), device=device).detach()
            if timed:
                train_timer.stop()
            running_loss += loss
            diverged_at = torch.where((diverged_at < 0) & ~torch.isfinite(loss), iteration + 1, diverged_at)
            bar.update()
            done = iteration + 1
            if done % check_every == 0 or done % suite.val_every == 0 or done == suite.meta_iterations:
                if diverged_at.item() >= 0:
                    raise Diverged(int(diverged_at.item()), "the meta-training loss", _first_bad(running_loss))
            if done % suite.val_every == 0 or done == suite.meta_iterations:
                mean_loss = running_loss.item() / (done - (curve[-1]["iteration"] if curve else 0))
                running_loss.zero_()
                with autocast(options, device):
                    val_values, record["seeds"]["val_episodes"]["sha256"] = episodes.evaluate(
                        algorithm, "val", suite.val_tasks, eval_steps)
                value = val_values.mean().item()
                # JSON has no inf or NaN: a non-finite validation score is stored as null.
                curve.append({"iteration": done, "wall_time_s": time.perf_counter() - wall_start,
                              "train_loss": mean_loss, "val_metric": value if math.isfinite(value) else None})
                if math.isfinite(value) and sign * value < sign * best_value:
                    best_value, best_iteration, best_state = value, done, _state_copy(algorithm)
                bar.set_postfix(loss=f"{mean_loss:.3g}", val=f"{value:.3g}")
            if checkpoint is not None and every and done % every == 0 and done < suite.meta_iterations:
                save_checkpoint(checkpoint, {
                    "iteration": done, "execution": record["execution"], "training": algorithm.training_state(), "curve": curve,
                    "best_value": best_value, "best_iteration": best_iteration, "best_state": best_state,
                    "running_loss": running_loss.detach().cpu(), "train_segments": train_timer.segment_seconds(),
                    "data_seconds": data_seconds, "peak_mb": max(earlier_peak_mb, memory.peak_mb()),
                    "wall_time_s": time.perf_counter() - wall_start,
                    "val_sha256": record["seeds"]["val_episodes"]["sha256"],
                    "diverged_at": int(diverged_at.item()),
                })
        bar.close()
        algorithm.load_state_dict(best_state)
        test_timer = SegmentTimer(device)
        test_timer.start()
        with autocast(options, device):
            per_task, record["seeds"]["test_episodes"]["sha256"] = episodes.evaluate(
                algorithm, "test", suite.test_tasks, eval_steps)
        test_timer.stop()
        test_seconds = test_timer.seconds()
        # The episode hashes above cover what determines the episodes (data key and drawn indices);
        # these cover the bytes the algorithm read, so a differently decoded or damaged copy of the
        # data shows as other contents of the same episodes.
        for split, n_tasks in (("val", suite.val_tasks), ("test", suite.test_tasks)):
            record["seeds"][f"{split}_episodes"]["contents_sha256"] = episodes.contents_digest(split, n_tasks)
        values = per_task.double().cpu().tolist()
        bad = [v for v in values if not math.isfinite(v)]
        if bad:
            raise Diverged(suite.meta_iterations, f"the test metric of {len(bad)} of {len(values)} episodes", bad[0])
        mean, ci95 = mean_ci95(values)
        timed_iterations = suite.meta_iterations - min(suite.warmup_iterations, suite.meta_iterations)
        step_seconds = train_timer.segment_seconds()
        if not algorithm.learns:  # its "training" is a no-op: a tasks/s figure would mean nothing
            timed_iterations, step_seconds = 0, []
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
                "state_sha256": state_sha256(best_state),  # the selected model's bits (bench reproduce compares them)
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
            memory={"peak_mb": max(earlier_peak_mb, memory.peak_mb()), "kind": memory.kind},
            ended_at=records.utc_now(),
        )
    except KeyboardInterrupt:
        record.update(status="interrupted", ended_at=records.utc_now(),
                      error={"type": "KeyboardInterrupt", "message": f"interrupted at iteration {iteration}"},
                      timing={"wall_time_s": time.perf_counter() - wall_start})
        raise
    except Diverged as exc:  # recorded as such, and kept out of leaderboards (only completed runs count)
        log.error("%s seed %d diverged: %s", run.algorithm.name, run.seed, exc)
        record.update(status="diverged", ended_at=records.utc_now(),
                      diverged={"iteration": exc.iteration, "what": exc.phase, "value": str(exc.value)},
                      training={"meta_iterations": suite.meta_iterations, "stopped_at_iteration": iteration + 1,
                                "curve": curve},
                      error={"type": "Diverged", "message": str(exc), "iteration": exc.iteration},
                      timing={"wall_time_s": time.perf_counter() - wall_start})
    except Exception as exc:  # recorded, not swallowed: the record says failed, with the traceback
        log.error("%s seed %d failed: %s: %s", run.algorithm.name, run.seed, type(exc).__name__, exc)
        record.update(status="failed", ended_at=records.utc_now(),
                      error={"type": type(exc).__name__, "message": str(exc), "iteration": iteration,
                             "traceback": traceback.format_exc()},
                      timing={"wall_time_s": time.perf_counter() - wall_start})
    return record


def _first_bad(running_loss: torch.Tensor) -> float:
    value = running_loss.item()
    return value if not math.isfinite(value) else math.nan


def execute(plan: RunPlan, progress: bool = True, executor: Any = None, resume: bool = False) -> list[dict[str, Any]]:
    """Run every planned (algorithm, seed) with ``executor`` (default: this process, one after
    another); returns their records in the plan's order. With ``resume``, runs finished in
    ``plan.results_dir`` are skipped (their records returned) and interrupted ones continued."""
    from bench.executors import LocalExecutor, run_plan

    return run_plan(plan, executor or LocalExecutor(), progress=progress, resume=resume)
