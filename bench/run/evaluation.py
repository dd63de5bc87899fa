"""``python -m bench evaluate RECORD ... --suite OTHER``: a saved model evaluated under another suite's protocol.

The model is the one a run kept with ``--save-model`` (its record's ``saved_model``, checked against
its SHA-256), rebuilt from the network block of the record's own protocol, with the algorithm and
hyperparameters the record names. Everything else comes from the target suite: its test episodes
(drawn, or from an episode file), ways, shots, queries, test inner steps and batch-norm mode. So a
metric-based or fine-tuning method may change ways; an algorithm whose output layer was trained for
a number of ways cannot, and a backbone needs the input shape it was trained on: both are errors
before any evaluation.

Each evaluation writes one record under ``RESULTS/evaluations/<target suite>/<tier>/``, shaped as a
run record of the target suite (so leaderboards read it with the same rules), whose protocol also
names the training suite, protocol and budget (``trained_on``): models trained under different
protocols or budgets never share a row, and none of these rows is mixed with the target's own runs.
``evaluation_of`` names the training record, its run id, the model file and the model's state hash.
Evaluating a record on its own suite gives its per-episode test values exactly (a test).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import TypeAdapter, ValidationError
from tqdm.auto import tqdm

from bench import records
from bench.algorithms import ALGORITHMS, Algorithm, Hyperparameters, Problem
from bench.algorithms.base import parse_hparams
from bench.config import ModelConfig, Suite, load_suite
from bench.errors import BenchError
from bench.formatting import relative_path
from bench.records import EVALUATIONS
from bench.run.environment import PROJECT_ROOT, environment, resolve_device
from bench.run.execution import ExecutionOptions, apply_compile, autocast, recorded_eval_chunk
from bench.run.runner import Episodes, check_suite_data, state_sha256
from bench.run.saved_models import load_saved_model
from bench.run.timing import PeakMemory, SegmentTimer
from bench.seeding import generator
from bench.stats import mean_ci95

log = logging.getLogger(__name__)

BATCH_NORM_MODELS = ("conv4", "resnet12")


@dataclass(frozen=True)
class PlannedEvaluation:
    path: Path  # the training record
    record: dict[str, Any]
    algorithm: Algorithm  # built for the target, holding the saved weights
    episodes: Episodes  # the target's episodes through this network's input pipeline
    execution: dict[str, Any]  # the record's numerics, applied to the evaluation too
    rebuilt: tuple[str, ...] = ()  # state entries built for the target's ways instead of loaded (protocol_shaped_state)


@dataclass(frozen=True)
class EvaluationPlan:
    target: Suite  # the target suite as loaded
    evaluations: tuple[PlannedEvaluation, ...]
    device: torch.device
    results_dir: Path


def _training_results_dir(path: Path) -> Path:
    """Records are filed as RESULTS/<suite>/<tier>/<file>.json; their saved models under RESULTS/models/."""
    return path.resolve().parents[2]


def _trained_model(path: Path, record: dict[str, Any]) -> Any:
    try:
        return TypeAdapter(ModelConfig).validate_python(record["suite"]["protocol"].get("model"))
    except ValidationError as exc:
        raise BenchError(f"{path}: its protocol's model block is not one this bench builds "
                         f"({exc.errors()[0]['msg']}); evaluate it with the bench version that trained it") from None


def target_for(target: Suite, model: Any, path: Path) -> Suite:
    """The target suite with the trained network in place of its own (the rest is the target's)."""
    if (model.kind in BATCH_NORM_MODELS) != (target.batch_norm != "none"):
        needed = "'transductive' or 'inductive'" if model.kind in BATCH_NORM_MODELS else "'none'"
        raise BenchError(f"{path}: the saved {model.kind} network needs a suite with batch_norm {needed}; suite "
                         f"{target.name!r} has {target.batch_norm!r}: evaluate on a suite whose batch_norm fits")
    return target.model_copy(update={"model": model})


def _load_training_record(path: Path, target: Suite) -> dict[str, Any]:
    record = records.load_record(path)
    record["_path"] = str(path)
    if record.get("kind") == "evaluation":
        raise BenchError(f"{path} is an evaluation record; give the training record it names "
                         f"({(record.get('evaluation_of') or {}).get('record')})")
    if record["status"] != "completed":
        raise BenchError(f"{path}: a {record['status']} run has no selected model; give a completed record")
    if "saved_model" not in record:
        raise BenchError(f"{path} has no saved model: its run did not keep its weights; run it again with --save-model")
    task_type = record["suite"]["protocol"].get("task_type")
    if task_type != target.task_type:
        raise BenchError(f"{path}: a {task_type} model cannot be evaluated on {target.task_type} suite {target.name!r}")
    return record


def build_evaluated(path: Path, record: dict[str, Any], suite: Suite, episodes: Episodes,
                    device: torch.device) -> PlannedEvaluation:
    """The record's algorithm, built for ``suite`` and holding the saved weights; a ``BenchError`` when they do not fit."""
    name = record["algorithm"]["name"]
    algorithm_class = ALGORITHMS.get(name)
    reason = algorithm_class.inapplicable(suite)
    if reason is not None:
        raise BenchError(f"{path}: {name} does not apply to suite {suite.name!r}: {name} {reason}")
    hparams: Hyperparameters = parse_hparams(algorithm_class, record["algorithm"]["hyperparameters"], str(path))
    saved = record["saved_model"]
    in_shape = tuple(episodes.source.in_shape)
    if list(in_shape) != list(saved["in_shape"]):
        raise BenchError(f"{path}: the saved network takes inputs of shape {tuple(saved['in_shape'])}, suite "
                         f"{suite.name!r} gives {in_shape}; evaluate on a suite with that image size and channel count "
                         "(e.g. data.image_size and data.channels)")
    out_features = suite.ways if suite.task_type == "classification" and suite.ways is not None else 1
    problem = Problem(suite=suite, in_shape=in_shape, out_features=out_features, n_train_classes=saved["n_train_classes"])
    init = generator("suite", record["suite"]["name"], "init", record["seeds"]["training_seed"])
    algorithm = algorithm_class(hparams, problem, init)
    state = load_saved_model(record, _training_results_dir(path))
    built = algorithm.state_dict()
    rebuilt = sorted(k for k in algorithm.protocol_shaped_state()
                     if k in state and k in built and state[k].shape != built[k].shape)
    state = {**state, **{k: built[k] for k in rebuilt}}  # sized for the target's ways; read by no prediction
    try:
        algorithm.load_state_dict(state)
    except RuntimeError as exc:
        shapes = " ".join(str(exc).split())[:300]
        raise BenchError(f"{path}: {name}'s saved weights do not fit suite {suite.name!r} (trained for "
                         f"{saved['out_features']} outputs, the target has {out_features}): {shapes}. An algorithm "
                         "whose output layer is trained (e.g. maml) evaluates only on suites with its training "
                         "ways; metric-based and fine-tuning ones (protonet, baseline) take any ways") from None
    execution = record.get("execution") or {}
    if hasattr(algorithm, "eval_chunk") and (chunk := recorded_eval_chunk(execution)) is not None:
        setattr(algorithm, "eval_chunk", chunk)  # noqa: B010 (not every algorithm has it): the record's arithmetic
    if execution.get("compile"):
        apply_compile(algorithm)
    return PlannedEvaluation(path, record, algorithm.to(device), episodes, execution, tuple(rebuilt))


def plan_evaluation(paths: list[Path], suite_name: str, tier: str | None = None, episodes_file: Path | None = None,
                    results_dir: Path | str = "results", device: str = "auto") -> EvaluationPlan:
    """Check every record, model file, shape and the target before any evaluation; raises ``BenchError``."""
    if not paths:
        raise BenchError("give at least one training record (a run record with a saved model)")
    overrides = {"test_episodes": str(episodes_file)} if episodes_file is not None else {}
    texts = (f"suite.test_episodes={episodes_file}",) if episodes_file is not None else ()
    target = load_suite(suite_name, tier=tier, overrides=overrides, override_texts=texts)
    training = [(Path(p), _load_training_record(Path(p), target)) for p in paths]
    results_path = Path(results_dir)
    output = f"{EVALUATIONS}/{target.name}/{target.tier}"
    records.check_writable(results_path, subdirs=(output,), create=False)
    check_suite_data(target)
    resolved = resolve_device(device)
    episodes: dict[str, Episodes] = {}  # one per network block: models alike share the drawn episodes
    planned = []
    for path, record in training:
        model = _trained_model(path, record)
        suite = target_for(target, model, path)
        key = json.dumps(model.model_dump(mode="json"), sort_keys=True)
        if key not in episodes:
            episodes[key] = Episodes(suite, resolved)
        planned.append(build_evaluated(path, record, suite, episodes[key], resolved))
    records.check_writable(results_path, subdirs=(output,))
    return EvaluationPlan(target, tuple(planned), resolved, results_path)


def _shown_path(path: Path) -> str:
    resolved = path.resolve()
    return relative_path(resolved, PROJECT_ROOT) if resolved.is_relative_to(PROJECT_ROOT) else str(resolved)


def evaluation_protocol(suite: Suite, training: dict[str, Any]) -> dict[str, Any]:
    """The target's protocol (with the trained network) and what the model was trained under."""
    trained = training["suite"]
    return {**suite.protocol_fields(), "trained_on": {
        "suite": trained["name"], "suite_version": trained["version"], "tier": trained["tier"],
        "protocol_hash": trained["protocol_hash"], "budget": trained.get("budget")}}


def evaluate_one(plan: EvaluationPlan, planned: PlannedEvaluation) -> dict[str, Any]:
    """Evaluate one saved model on the target's test episodes; returns its (already written) record."""
    training, algorithm, episodes = planned.record, planned.algorithm, planned.episodes
    suite = algorithm.problem.suite
    options = ExecutionOptions(autocast=planned.execution.get("autocast"))
    steps = algorithm.evaluation_steps(suite.test_inner_steps)
    started_at, run_id = records.utc_now(), records.new_run_id()
    wall_start = time.perf_counter()
    memory = PeakMemory(plan.device)
    timer = SegmentTimer(plan.device)
    algorithm.train()  # as the runner leaves it for its test: each algorithm sets its own evaluation mode
    timer.start()
    with autocast(options, plan.device):
        per_task, episodes_sha256 = episodes.evaluate(algorithm, "test", suite.test_tasks, steps)
    timer.stop()
    values = per_task.double().cpu().tolist()
    contents = episodes.contents_digest("test", suite.test_tasks)
    mean, ci95 = mean_ci95(values)
    protocol = evaluation_protocol(suite, training)
    code_now, code_then = algorithm.code_version(), training["algorithm"].get("code_version")
    seconds, wall_seconds = timer.seconds(), time.perf_counter() - wall_start
    record = {
        "schema_version": records.SCHEMA_VERSION,
        "kind": "evaluation",
        "run_id": run_id,
        "status": "completed",
        "suite": {
            "name": suite.name, "version": suite.version, "tier": suite.tier, "file": suite.source_file,
            "file_sha256": suite.file_sha256, "protocol": protocol,
            "protocol_hash": hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:16],
            "budget": training["suite"].get("budget"),  # the model's training budget: rows never mix budgets
            "overrides": list(suite.overrides),
        },
        "algorithm": {
            **training["algorithm"],
            # The code that evaluated as well as the code that trained: a change in either is another row.
            "code_version": code_now if code_now == code_then else f"{str(code_then)[:12]}+{str(code_now)[:12]}",
            "training_code_version": code_then,
        },
        "seeds": {
            "training_seed": training["seeds"]["training_seed"],
            "init": training["seeds"].get("init"),
            "test_episodes": {"split": "test", "seed": suite.episode_seed, "count": suite.test_tasks,
                              "sha256": episodes_sha256, "contents_sha256": contents},
        },
        "evaluation_of": {
            "record": _shown_path(planned.path),
            "run_id": training["run_id"],
            "suite": {k: training["suite"][k] for k in ("name", "version", "tier", "protocol_hash") if k in training["suite"]},
            "saved_model": training["saved_model"],
            "state_sha256": state_sha256(algorithm.state_dict()),
            "rebuilt_for_target": list(planned.rebuilt),
            "training_state_sha256": training["training"].get("state_sha256"),
            "training_metric": {k: training["metric"][k] for k in ("name", "mean", "ci95", "n_episodes")},
        },
        "metric": {
            "name": suite.metric, "lower_is_better": suite.lower_is_better, "mean": mean, "ci95": ci95,
            "ci_method": "1.96 * std(ddof=0) / sqrt(n) over test episodes", "n_episodes": len(values),
            "inner_steps": steps, "per_task": values,
        },
        "training": {"meta_iterations": training["training"].get("meta_iterations"),
                     "best_iteration": training["training"].get("best_iteration"), "curve": None},
        "execution": {"autocast": options.autocast, "compile": bool(planned.execution.get("compile", False)),
                      "eval_chunk": getattr(algorithm, "eval_chunk", None)},
        "timing": {"method": timer.method, "meta_train_tasks_per_s": None, "test_seconds": seconds,
                   "test_tasks_per_s": len(values) / seconds if seconds else None, "wall_time_s": wall_seconds},
        "memory": {"peak_mb": memory.peak_mb(), "kind": memory.kind},
        "environment": environment(plan.device),
        "started_at": started_at,
        "ended_at": records.utc_now(),
    }
    path = records.record_path(plan.results_dir / EVALUATIONS, suite.name, str(suite.tier), training["algorithm"]["name"],
                               training["seeds"]["training_seed"], run_id)
    records.write_record(path, record)
    record["_path"] = str(path)
    log.debug("%s seed %d on %s: %s %.4g +- %.2g (%s)", training["algorithm"]["name"], training["seeds"]["training_seed"],
             suite.name, suite.metric, mean, ci95, path)
    return record


def evaluate(plan: EvaluationPlan, progress: bool = True) -> list[dict[str, Any]]:
    """Every planned evaluation, in order; returns their records."""
    out = []
    for planned in tqdm(plan.evaluations, desc=f"evaluate on {plan.target.name}", unit="model",
                        disable=None if progress else True):
        out.append(evaluate_one(plan, planned))
    return out
