"""The tuned-hyperparameters file: ``RESULTS/tuned/SUITE-TIER.json``, each algorithm's best values from
``bench tune`` (bench.run.tuning) with the study's provenance, which ``bench run --tuned`` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import records
from bench.config import Suite
from bench.errors import BenchError

TUNED_FORMAT = 1


def tuned_path(results_dir: Path, suite: Suite) -> Path:
    return results_dir / records.TUNED / f"{suite.name}-{suite.tier}.json"


def write_tuned(results_dir: Path, suite: Suite, summaries: list[dict[str, Any]]) -> Path:
    """Add the studies' best values to the suite's tuned file (each algorithm's entry replaced)."""
    path = tuned_path(results_dir, suite)
    tuned = read_tuned(path) if path.exists() else {"tuned_format": TUNED_FORMAT, "suite": suite.name,
                                                    "tier": suite.tier, "algorithms": {}}
    for summary in summaries:
        tuned["algorithms"][summary["algorithm"]] = {
            "hyperparameters": summary["best"]["values"], "best_val_metric": summary["best"]["best_val_metric"],
            "best_trial": summary["best"]["number"],
            "provenance": {k: summary[k] for k in ("study_sha256", "trials", "seed", "sampler", "score", "pruning",
                                                   "search_space", "protocol_hash", "budget", "overrides",
                                                   "code_version", "tuning_wall_time_s")},
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    records.write_atomic(path, json.dumps(tuned, indent=1, sort_keys=True) + "\n")
    return path


def read_tuned(path: Path) -> dict[str, Any]:
    try:
        tuned = json.loads(path.read_text())
    except FileNotFoundError:
        raise BenchError(f"{path}: no tuned hyperparameters for this suite and tier; run `bench tune` first") from None
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path}: not a readable tuned-hyperparameters file ({exc}); run `bench tune` again") from None
    if not isinstance(tuned, dict) or tuned.get("tuned_format") != TUNED_FORMAT or not isinstance(tuned.get("algorithms"), dict):
        raise BenchError(f"{path}: not a tuned-hyperparameters file of format {TUNED_FORMAT}; run `bench tune` again")
    return tuned


def tuned_assignment(results_dir: Path, suite: Suite, algorithms: list[str]) -> tuple[dict[str, dict[str, Any]],
                                                                                    dict[str, dict[str, Any]]]:
    """For ``bench run --tuned``: each algorithm's tuned values and their provenance (the record's
    ``algorithm.tuned``); an algorithm without a study on this protocol and budget is an error."""
    path = tuned_path(results_dir, suite)
    tuned = read_tuned(path)["algorithms"]
    missing = [name for name in algorithms if name not in tuned]
    if missing:
        raise BenchError(f"{path} has no tuned values for {', '.join(missing)}; run `bench tune {suite.name} "
                         f"--algorithms {','.join(missing)}` or leave them out of --algorithms")
    assigned, provenance = {}, {}
    for name in algorithms:
        entry = tuned[name]
        where = entry["provenance"]
        if where["protocol_hash"] != suite.protocol_hash() or where["budget"] != suite.budget():
            raise BenchError(f"{path}: {name} was tuned on protocol {where['protocol_hash']} with budget "
                             f"{where['budget']}, not this run's ({suite.protocol_hash()}, {suite.budget()}); "
                             "tune it again under these settings")
        assigned[name] = entry["hyperparameters"]
        provenance[name] = {"study_sha256": where["study_sha256"], "trials": where["trials"], "file": str(path),
                            "best_val_metric": entry["best_val_metric"]}
    return assigned, provenance
