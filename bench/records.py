"""Run records: one versioned JSON file per (suite, tier, algorithm, seed) run, written atomically.

Layout: ``<results_dir>/<suite>/<tier>/<algorithm>-seed<seed>-<run_id>.json``. A record is written
with status ``running`` when its run starts and rewritten when it ends (``completed``, ``failed``
or ``interrupted``), so a run killed without warning leaves a ``running`` record behind instead of
nothing. Readers check the schema version and the required keys.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.errors import BenchError

SCHEMA_VERSION = 1
STATUSES = ("running", "completed", "failed", "interrupted")
REQUIRED_KEYS = ("schema_version", "run_id", "status", "suite", "algorithm", "seeds", "environment", "started_at")
COMPLETED_KEYS = ("metric", "timing", "memory", "training", "ended_at")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def record_path(results_dir: Path, suite: str, tier: str, algorithm: str, seed: int, run_id: str) -> Path:
    return results_dir / suite / tier / f"{algorithm}-seed{seed}-{run_id}.json"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers see the old
    file or the new one, never half of one, even if the process dies mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n")


def _unreadable(path: Path, why: str) -> BenchError:
    return BenchError(
        f"{path}: not a readable bench record ({why}); move it out of the results directory or delete it"
    )


def load_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise _unreadable(path, f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, str(exc)) from None
    if not isinstance(record, dict):
        raise _unreadable(path, "the top level is not an object")
    if record.get("schema_version") != SCHEMA_VERSION:
        raise _unreadable(path, f"schema_version {record.get('schema_version')!r}, this bench reads {SCHEMA_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if record.get("status") == "completed":
        missing += [k for k in COMPLETED_KEYS if k not in record]
    if missing:
        raise _unreadable(path, f"missing {', '.join(missing)}")
    if record["status"] not in STATUSES:
        raise _unreadable(path, f"unknown status {record['status']!r}")
    return record


MEASUREMENT_DIRS = ("perf", "cost")  # results/perf and results/cost hold `bench perf` and `bench cost` records, not runs


def iter_record_paths(results_dir: Path, suite: str | None = None) -> Iterator[Path]:
    base = results_dir / suite if suite else results_dir
    if base.is_dir():
        yield from sorted(p for p in base.rglob("*.json") if not p.name.startswith(".")
                          and (suite or p.relative_to(base).parts[0] not in MEASUREMENT_DIRS))


def load_records(results_dir: Path, suite: str | None = None) -> list[dict[str, Any]]:
    """Every record under ``results_dir`` (for ``suite``); the first unreadable one is an error."""
    records = []
    for path in iter_record_paths(results_dir, suite):
        record = load_record(path)
        record["_path"] = str(path)
        records.append(record)
    return records


def newest_per_seed(found: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """The newest record (by start time) of each (algorithm, training seed): the one that counts."""
    newest: dict[tuple[str, int], dict[str, Any]] = {}
    for record in sorted(found, key=lambda r: r["started_at"]):
        newest[(record["algorithm"]["name"], record["seeds"]["training_seed"])] = record
    return dict(sorted(newest.items()))


def check_writable(results_dir: Path) -> None:
    """Fail before any work if records cannot be written under ``results_dir``."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=results_dir, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise BenchError(
            f"results directory {results_dir} is not writable ({exc.strerror or exc}); "
            f"choose another with --results-dir"
        ) from None
