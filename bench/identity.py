"""What makes two run records comparable: the identities that tables, leaderboard rows and jobs are
keyed by. Pure functions of a record, shared by the run layer (a job's lock and ``--resume``) and the
results layer (which records are averaged together, ``bench.results.entries``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:20]


def table_identity(record: dict[str, Any]) -> dict[str, Any]:
    """What records must share to sit in one table: comparable numbers under one budget."""
    suite = record["suite"]
    return {"suite": suite["name"], "suite_version": suite["version"], "tier": suite["tier"],
            "protocol_hash": suite["protocol_hash"], "budget": suite.get("budget")}


def numerics(record: dict[str, Any]) -> dict[str, Any]:
    """The execution options that change the arithmetic, not only its speed or rounding order."""
    execution = record.get("execution") or {}
    return {"autocast": execution.get("autocast"), "compile": bool(execution.get("compile", False))}


def entry_identity(record: dict[str, Any]) -> dict[str, Any]:
    """What records must share, within a table, to be averaged into one row."""
    algorithm = record["algorithm"]
    # A tuned entry (`bench run --tuned`) is never averaged with a default one, even where the study's
    # best values equal the defaults: the key is absent from default records, whose identity stays as it was.
    tuned = {"tuned": algorithm["tuned"]["study_sha256"]} if algorithm.get("tuned") else {}
    return {"algorithm": algorithm["name"], "hyperparameters": algorithm["hyperparameters"],
            "code_version": algorithm.get("code_version"), **numerics(record), **tuned}


def run_identity(record: dict[str, Any]) -> str:
    """One training seed of one entry: records with the same identity are runs of the same job
    (``--resume`` skips a job with a finished record and continues one with an interrupted record)."""
    return digest({**table_identity(record), **entry_identity(record), "seed": record["seeds"]["training_seed"]})
