"""``bench tune``: every algorithm tuned with the same budget on validation episodes.

Each algorithm gets the same number of trials, each trained under the same budget (the tier's, with
the same ``--set suite.*`` overrides for all) and scored by its best validation metric; the test
episodes are never evaluated. The search is Optuna's TPE sampler (the first trials at random, as
Optuna's default), in the space the algorithm declares beside its hyperparameters
(``bench.algorithms.base.Search``), narrowed where the suite file says so; no trial is pruned.

A study is reproducible and resumable trial by trial: trial n's values are drawn by a sampler seeded
from (study seed, n) given the results of trials 0..n-1, which are read back from their records.
With ``parallel`` k > 1 (on a Ray executor) the trials are drawn and run in rounds of k, each round
given the results of the rounds before it, so a study of k at a time is as reproducible, and is a
study of its own (k is in its provenance).
Each trial is a normal run record (status, hyperparameters, validation curve) under
``RESULTS/tuning/SUITE/TIER/STUDY/trial-NNN/``; a killed study continues with ``--resume`` (finished
trials are read, an interrupted one continues from its checkpoint). The best values of each
algorithm go to ``RESULTS/tuned/SUITE-TIER.json`` with the study's provenance; ``bench run --tuned``
runs with them, and its records say so (they form entries of their own).
"""

from __future__ import annotations

import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import records
from bench.algorithms import Algorithm
from bench.algorithms.base import Search
from bench.config import Suite, load_suite
from bench.errors import BenchError
from bench.identity import digest
from bench.run import executors
from bench.run.runner import Overrides, plan_run, resolve_algorithms
from bench.run.tuned import tuned_path, write_tuned

log = logging.getLogger(__name__)

SAMPLER = "optuna.TPESampler (default settings; seeded per trial from the study seed and the trial number)"


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise BenchError("bench tune needs Optuna: pip install 'bench[tune]' (tox and .ci/run install it)") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


@dataclass(frozen=True)
class Study:
    """One algorithm's study: where it is filed and what it is (its hash covers everything that decides it)."""

    algorithm: type[Algorithm]
    space: dict[str, Search]
    directory: Path
    provenance: dict[str, Any]

    @property
    def name(self) -> str:
        return self.directory.name

    def trial_dir(self, number: int) -> Path:
        return self.directory / f"trial-{number:03d}"


def format_values(values: dict[str, Any]) -> str:
    """Hyperparameter values as ``name=value`` pairs, floats to 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _distributions(algorithm: type[Algorithm], space: dict[str, Search]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    fields = algorithm.Hparams.model_fields
    made: dict[str, Any] = {}
    for name, search in space.items():
        if search.choices:
            made[name] = CategoricalDistribution(list(search.choices))
        elif fields[name].annotation is int:
            made[name] = IntDistribution(int(search.low), int(search.high), log=search.log)  # type: ignore[arg-type]
        else:
            made[name] = FloatDistribution(search.low, search.high, log=search.log)  # type: ignore[arg-type]
    return made


def suggest(study: Study, finished: list[tuple[dict[str, Any], float | None]], number: int, seed: int,
            lower_is_better: bool) -> dict[str, Any]:
    """Trial ``number``'s values: a pure function of the study, its seed and the earlier trials' results
    (``finished``: values and score, None for a trial that failed or diverged)."""
    optuna = import_optuna()
    distributions = _distributions(study.algorithm, study.space)
    sampler = optuna.samplers.TPESampler(seed=int(digest(["bench tune", seed, number]), 16) % 2**32)
    optuna_study = optuna.create_study(direction="minimize" if lower_is_better else "maximize", sampler=sampler)
    for values, score in finished:
        state = optuna.trial.TrialState.COMPLETE if score is not None else optuna.trial.TrialState.FAIL
        optuna_study.add_trial(optuna.trial.create_trial(params=values, distributions=distributions, state=state,
                                                         value=score))
    return dict(optuna_study.ask(distributions).params)


def plan_studies(suite_name: str, algorithms: list[str] | None, trials: int, tier: str | None, seed: int,
                 results_dir: Path, overrides: list[str] | tuple[str, ...],
                 parallel: int = 1) -> tuple[Suite, list[Study], dict[str, str]]:
    """Resolve and check a tuning request (bad input fails here, before any trial)."""
    if trials < 1:
        raise BenchError(f"--trials {trials}: give at least 1 trial per algorithm")
    if parallel < 1:
        raise BenchError(f"--parallel {parallel}: give at least 1 trial at a time")
    parsed = Overrides.parse(overrides)
    if parsed.algorithms:
        raise BenchError(f"--set {', '.join(parsed.algorithms)}.*: bench tune searches the hyperparameters; "
                         "only suite.FIELD=VALUE (the budget every algorithm gets) may be set")
    suite = load_suite(suite_name, tier=tier, overrides=parsed.suite, override_texts=parsed.texts)
    chosen, skipped = resolve_algorithms(suite, algorithms)
    studies = []
    for algorithm in chosen:
        space = algorithm.search_space(suite)
        if not space:
            if algorithms is not None:
                raise BenchError(f"{algorithm.name} declares no tunable hyperparameter: nothing to tune")
            skipped[algorithm.name] = "declares no tunable hyperparameter"
            continue
        provenance = {
            "suite": suite.name, "suite_version": suite.version, "tier": suite.tier,
            "protocol_hash": suite.protocol_hash(), "budget": suite.budget(), "overrides": list(suite.overrides),
            "algorithm": algorithm.name, "code_version": algorithm.code_version(),
            "defaults": {**algorithm.Hparams().model_dump(mode="json"), **suite.algorithms.get(algorithm.name, {})},
            "search_space": {k: v.to_json() for k, v in space.items()},
            "trials": trials, "seed": seed, "sampler": SAMPLER, "score": "best validation metric (val_tasks episodes)",
            "pruning": "none",
            # Trials drawn in rounds of `parallel`, each round from the results of the rounds before it: the
            # values differ from one-at-a-time drawing, so it is part of the study (absent when 1, as before).
            **({"parallel": parallel} if parallel > 1 else {}),
        }
        study_hash = digest(provenance)
        directory = results_dir / records.TUNING / suite.name / str(suite.tier) / f"{algorithm.name}-{study_hash[:12]}"
        studies.append(Study(algorithm, space, directory, {**provenance, "study_sha256": study_hash}))
    if not studies:
        raise BenchError(f"nothing to tune on {suite.name}: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()))
    return suite, studies, skipped


def _score(record: dict[str, Any]) -> float | None:
    value = (record.get("training") or {}).get("best_val_metric") if record["status"] == "completed" else None
    return value if value is not None and math.isfinite(value) else None


def _stored_trial(study: Study, number: int) -> dict[str, Any] | None:
    """The finished record of trial ``number``, if one is stored."""
    directory = study.trial_dir(number)
    for path in records.iter_record_paths(directory) if directory.is_dir() else []:
        record = records.load_record(path)
        if record["status"] in executors.FINISHED:
            return record
    return None


def run_study(study: Study, suite_name: str, suite: Suite, seed: int, device: str,
              overrides: list[str] | tuple[str, ...], progress: bool,
              executor: executors.Executor | None = None) -> dict[str, Any]:
    """Every trial of ``study`` (its stored ones read back); returns its summary (also written to ``study.json``)."""
    name, lower = study.algorithm.name, suite.lower_is_better
    study_file = study.directory / "study.json"
    study.directory.mkdir(parents=True, exist_ok=True)
    records.write_atomic(study_file, json.dumps({**study.provenance, "status": "running"}, indent=1) + "\n")
    finished: list[tuple[dict[str, Any], float | None]] = []
    trials = []
    parallel = study.provenance.get("parallel", 1)

    def run_trial(number: int, values: dict[str, Any]) -> dict[str, Any]:
        log.info("%s trial %d: %s", name, number, format_values(values))
        plan = plan_run(suite_name, [name], [seed], suite.tier, study.trial_dir(number), device,
                        overrides, assigned={name: values},
                        tuning_trial={"study": study.name, "study_sha256": study.provenance["study_sha256"],
                                      "number": number, "values": values})
        [record] = executors.execute(plan, progress=progress and parallel == 1, executor=executor, resume=True)
        return record

    for start in range(0, study.provenance["trials"], parallel):
        numbers = range(start, min(start + parallel, study.provenance["trials"]))
        drawn = {n: suggest(study, finished, n, seed, lower) for n in numbers}  # from the earlier rounds only
        found = {n: _stored_trial(study, n) for n in numbers}
        missing = [n for n in numbers if found[n] is None]
        if len(missing) > 1:  # the round's trials at once, each a job of the (Ray) executor
            with ThreadPoolExecutor(max_workers=len(missing)) as pool:
                found.update(zip(missing, pool.map(run_trial, missing, [drawn[n] for n in missing]), strict=True))
        else:
            found.update({n: run_trial(n, drawn[n]) for n in missing})
        for number in numbers:
            record, values = found[number], drawn[number]
            assert record is not None, "every trial of the round ran or was stored"
            stored_values = (record.get("tuning_trial") or {}).get("values")
            if stored_values != values:
                raise BenchError(f"{study.trial_dir(number)}: its record holds {stored_values}, but this study draws "
                                 f"{values} for trial {number}; the folder belongs to another study: move it away")
            score = _score(record)
            finished.append((values, score))
            trials.append({"number": number, "values": values, "best_val_metric": score, "status": record["status"],
                           "wall_time_s": (record.get("timing") or {}).get("wall_time_s")})
    scored = [t for t in trials if t["best_val_metric"] is not None]
    if not scored:
        raise BenchError(f"{name}: none of its {len(trials)} trials finished with a validation score "
                         f"(see the records under {study.directory})")
    best = (min if lower else max)(scored, key=lambda t: t["best_val_metric"])
    summary = {**study.provenance, "status": "completed", "trials_run": trials, "best": best,
               "tuning_wall_time_s": sum(t["wall_time_s"] or 0.0 for t in trials)}
    records.write_atomic(study_file, json.dumps(summary, indent=1) + "\n")
    return summary


def tune(suite_name: str, algorithms: list[str] | None = None, trials: int = 20, tier: str | None = None, seed: int = 0,
         results_dir: Path | str = "results", device: str = "auto", overrides: list[str] | tuple[str, ...] = (),
         resume: bool = False, progress: bool = True, executor: executors.Executor | None = None,
         parallel: int = 1) -> tuple[list[dict[str, Any]], Path]:
    """Tune each algorithm (all that apply when None) on ``suite_name``; the study summaries and the tuned file.

    ``parallel``: trials drawn and run at a time (rounds, each drawn from the results of the earlier
    ones), which needs an executor that runs jobs side by side (``RayExecutor``)."""
    import_optuna()
    if parallel > 1 and not isinstance(executor, executors.RayExecutor):
        raise BenchError(f"--parallel {parallel} runs trials side by side on a Ray cluster: add --executor ray "
                         "(this process alone runs one trial at a time)")
    results_path = Path(results_dir)
    suite, studies, skipped = plan_studies(suite_name, algorithms, trials, tier, seed, results_path, overrides, parallel)
    for name, why in skipped.items():
        log.info("not tuned: %s (%s)", name, why)
    for study in studies:  # every study's folder is checked before the first trial runs
        if study.directory.exists() and not resume:
            raise BenchError(f"{study.directory} already holds this study's trials; add --resume to continue it "
                             "(finished trials are kept), or move the folder away to start again")
    records.check_writable(results_path, subdirs=(records.TUNING, records.TUNED))
    summaries, path = [], tuned_path(results_path, suite)
    for study in studies:  # each algorithm's best is written as its study ends, so a killed run keeps the finished ones
        summaries.append(run_study(study, suite_name, suite, seed, device, overrides, progress, executor))
        path = write_tuned(results_path, suite, summaries[-1:])
    return summaries, path

