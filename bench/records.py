"""Run records: one versioned JSON file per (suite, tier, algorithm, seed) run, written atomically.

Layout: ``<results_dir>/<suite>/<tier>/<algorithm>-seed<seed>-<run_id>.json``. A record is written
with status ``running`` when its run starts and rewritten when it ends (``completed``, ``failed``,
``interrupted`` or ``diverged``), so a run killed without warning leaves a ``running`` record behind
instead of nothing. ``load_record`` checks the schema version and the type of every field a reader
uses, so a damaged record is one clear error naming the file.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bench.errors import BenchError, RecordNotWritten

SCHEMA_VERSION = 1
LOCKS = ".locks"  # <results_dir>/.locks/<suite>/: the executors' lock files (a dot directory: readers skip it)
# Statuses a run ends in (``running`` while it runs); only ``completed`` records carry results.
STATUSES = ("running", "completed", "failed", "interrupted", "diverged")
REQUIRED_KEYS = ("schema_version", "run_id", "status", "suite", "algorithm", "seeds", "environment", "started_at")
COMPLETED_KEYS = ("metric", "timing", "memory", "training", "ended_at")
TRIAL_COMPLETED_KEYS = ("timing", "memory", "training", "ended_at")  # a tuning trial is validated, never tested


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


def test_episodes_differ(runs: list[dict[str, Any]]) -> str | None:
    """Why ``runs`` were not all tested on the same episodes, or None when they were: one hash of
    what determines the episodes, and no two different hashes of what was read (records written
    before contents were hashed have none, and pair on the first hash alone)."""
    drawn = {r["seeds"]["test_episodes"].get("sha256") for r in runs}
    if None in drawn:
        return "a record holds no hash of its test episodes"
    if len(drawn) > 1:
        return "they drew different test episodes"
    read = {r["seeds"]["test_episodes"].get("contents_sha256") for r in runs} - {None}
    if len(read) > 1:
        return ("they drew the same test episodes but read different contents (another copy, decoder or "
                "preprocessing of the data)")
    return None


def record_path(results_dir: Path, suite: str, tier: str, algorithm: str, seed: int, run_id: str) -> Path:
    return results_dir / suite / tier / f"{algorithm}-seed{seed}-{run_id}.json"


_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers see the old
    file or the new one, never half of one, even if the process dies mid-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it private; a shared results directory needs the usual mode
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a failed write names no file: name ours
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def write_record(path: Path, record: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(record, indent=1, sort_keys=False, allow_nan=False) + "\n")


def write_finished_record(path: Path, record: dict[str, Any], fallbacks: list[Path]) -> None:
    """Write a finished run's record; if that fails, keep it in the first of ``fallbacks`` that
    takes it (another file system, with luck) and raise ``RecordNotWritten`` saying where it is.
    Moving the kept file to ``path`` later makes it an ordinary record."""
    try:
        write_record(path, record)
        return
    except OSError as exc:
        failure = exc
    for directory in fallbacks:
        kept = directory / f"unsaved-{path.name}"
        try:
            write_record(kept, record)
        except OSError:
            continue
        raise RecordNotWritten(
            f"the record of a finished run could not be written to {path} ({failure.strerror or failure}); it is kept "
            f"in {kept}: free space, then move it there (mv {kept} {path})")
    raise RecordNotWritten(
        f"the record of a finished run could not be written to {path} ({failure.strerror or failure}) nor anywhere "
        f"else; its JSON follows on the next line: save it as {path}\n" + json.dumps(record, allow_nan=False))


# --- the structure readers rely on -------------------------------------------------------------
# Leaderboards, reports, checks and --resume index into records; these models check, on load, the
# type of every field they read (JSON types exactly: no "1" for 1, no true for 1, no NaN), so a
# hand-edited or damaged record is one clear error instead of a crash deep inside a reader. Keys
# not listed here are allowed and left alone (records of newer runners carry more of them).

Finite = Annotated[float, Field(allow_inf_nan=False)]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a suite, tier or algorithm name: one path component, never ../


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Data(_Part):
    kind: str | None = None


class _Model(_Part):
    kind: str | None = None
    hidden: list[Any] = []


class _Protocol(_Part):
    shots: int
    queries: int
    test_tasks: int
    test_inner_steps: int
    ways: int | None = None
    train_ways: int | None = None
    train_shots: int | None = None
    train_queries: int | None = None
    batch_norm: str = "none"
    data: _Data = _Data()
    model: _Model = _Model()

    @model_validator(mode="after")
    def _train_shape_with_ways(self) -> _Protocol:
        if self.ways is not None and None in (self.train_ways, self.train_shots, self.train_queries):
            raise ValueError("a protocol with ways needs train_ways, train_shots and train_queries")
        return self


class _Suite(_Part):
    name: str = Field(pattern=NAME)
    version: int
    tier: str = Field(pattern=NAME)
    file: str | None = None
    protocol: _Protocol
    protocol_hash: str = Field(pattern=r"^[0-9a-f]+$")


class _Algorithm(_Part):
    name: str = Field(pattern=NAME)
    family: str
    hyperparameters: dict[str, Any]
    code_version: str | None = None


class _Episodes(_Part):
    sha256: str | None = None
    contents_sha256: str | None = None


class _Seeds(_Part):
    training_seed: int


class _CompletedSeeds(_Seeds):
    test_episodes: _Episodes


class _Metric(_Part):
    name: str
    lower_is_better: bool
    mean: Finite
    ci95: Finite
    n_episodes: int
    inner_steps: int
    per_task: list[Finite] | None = None

    @model_validator(mode="after")
    def _one_value_per_episode(self) -> _Metric:
        if self.per_task is not None and len(self.per_task) != self.n_episodes:
            raise ValueError(f"per_task has {len(self.per_task)} values for n_episodes {self.n_episodes}")
        return self


class _Timing(_Part):
    wall_time_s: Finite
    meta_train_tasks_per_s: Finite | None
    test_tasks_per_s: Finite | None
    meta_train_tasks_per_s_median: Finite | None = None
    meta_train_seconds: Finite | None = None
    test_seconds: Finite | None = None
    data_share: Finite | None = None


class _Memory(_Part):
    peak_mb: Finite


class _CurvePoint(_Part):
    iteration: int
    wall_time_s: Finite
    val_metric: Finite | None = None


class _Training(_Part):
    curve: list[_CurvePoint] | None = None


class _Execution(_Part):
    task_chunk: int | None = None


class _Record(_Part):
    """Any record: what identifies its run."""

    run_id: str
    status: str
    suite: _Suite
    algorithm: _Algorithm
    seeds: _Seeds
    environment: dict[str, Any]
    started_at: str
    execution: _Execution | None = None


class _CompletedRecord(_Record):
    """A completed record: its results too."""

    seeds: _CompletedSeeds
    metric: _Metric
    timing: _Timing
    memory: _Memory
    training: _Training
    ended_at: str


class _TrialTiming(_Part):
    wall_time_s: Finite


class _TrialTraining(_Training):
    best_val_metric: Finite | None


class _TuningTrial(_Part):
    study: str
    number: int


class _CompletedTrialRecord(_Record):
    """A completed tuning trial (``bench tune``): its validation results, and no test metric."""

    tuning_trial: _TuningTrial
    timing: _TrialTiming
    memory: _Memory
    training: _TrialTraining
    ended_at: str


def _first_error(exc: ValidationError) -> str:
    """The first problem of a pydantic error, as a short phrase on one line."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    message = " ".join(error["msg"].removeprefix("Value error, ").split())
    shown = repr(error.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"field {where!r}: {message}, got {shown}" if where else message


def _unreadable(path: Path, why: str) -> BenchError:
    return BenchError(
        f"{path}: not a readable bench record ({why}); move it out of the results directory or delete it"
    )


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def load_record(path: Path) -> dict[str, Any]:
    """A record as stored, after checking the structure its readers rely on (else a ``BenchError``)."""
    try:
        record = json.loads(path.read_text(), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise _unreadable(path, f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, " ".join(str(exc).split())) from None
    except RecursionError:
        raise _unreadable(path, "nested too deeply") from None
    except ValueError as exc:  # NaN or Infinity, a number of thousands of digits
        raise _unreadable(path, " ".join(str(exc).split("; use sys.")[0].split())) from None
    if not isinstance(record, dict):
        raise _unreadable(path, "the top level is not an object")
    version = record.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:  # neither true nor 1.0
        shown = repr(version) if len(repr(version)) <= 60 else repr(version)[:57] + "..."
        raise _unreadable(path, f"schema_version {shown}, this bench reads {SCHEMA_VERSION}")
    missing = [k for k in REQUIRED_KEYS if k not in record]
    trial = "tuning_trial" in record
    if record.get("status") == "completed":
        missing += [k for k in (TRIAL_COMPLETED_KEYS if trial else COMPLETED_KEYS) if k not in record]
    if missing:
        raise _unreadable(path, f"missing {', '.join(missing)}")
    if not isinstance(record["status"], str) or record["status"] not in STATUSES:
        shown = repr(record["status"]) if len(repr(record["status"])) <= 60 else repr(record["status"])[:57] + "..."
        raise _unreadable(path, f"unknown status {shown}")
    try:
        completed = _CompletedTrialRecord if trial else _CompletedRecord
        (completed if record["status"] == "completed" else _Record).model_validate(record)
    except ValidationError as exc:
        raise _unreadable(path, _first_error(exc)) from None
    except RecursionError:
        raise _unreadable(path, "nested too deeply") from None
    return record


# results/perf, results/cost and results/reproduce hold `bench perf*`, `bench cost` and `bench reproduce` summaries, results/gpu
# the GPU kit's outputs (tools/gpu_check.sh: its summary and the records of its runs, shown apart),
# results/evaluations `bench evaluate`'s records (read as the cross-domain tables of their target suites), not runs
EVALUATIONS = "evaluations"
TUNING = "tuning"  # bench tune's studies: RESULTS/tuning/SUITE/TIER/STUDY/ (trial records, validated only)
TUNED = "tuned"  # bench tune's best hyperparameters: RESULTS/tuned/SUITE-TIER.json (what `bench run --tuned` reads)
MEASUREMENT_DIRS = ("perf", "cost", "reproduce", EVALUATIONS, "gpu", TUNING, TUNED)


def iter_record_paths(results_dir: Path, suite: str | None = None) -> Iterator[Path]:
    if suite is not None and (not suite or suite in (".", "..") or "\0" in suite or Path(suite).name != suite):
        raise BenchError(f"{suite!r} is not a suite name (records are filed under {results_dir}/SUITE/); "
                         "give a name from `python -m bench list`")
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


def load_evaluation_records(results_dir: Path, suite: str) -> list[dict[str, Any]]:
    """The ``bench evaluate`` records whose target is ``suite`` (under ``results_dir/evaluations/``)."""
    return load_records(results_dir / EVALUATIONS, suite)


def evaluation_targets(results_dir: Path) -> list[str]:
    """The suites that ``bench evaluate`` records under ``results_dir`` were evaluated on."""
    base = results_dir / EVALUATIONS
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")) if base.is_dir() else []


def check_writable(results_dir: Path, what: str = "results directory", option: str = "--results-dir",
                   subdirs: tuple[str, ...] = (), create: bool = True) -> None:
    """Fail before any work if output cannot be written under ``results_dir`` and its ``subdirs``.

    ``create=False`` probes without creating anything (``--dry-run``): every path that exists must
    be a writable directory, and the first existing parent of one that does not must be writable.
    """
    targets = [results_dir, *(results_dir / s for s in subdirs)]
    for target in targets:
        try:
            if create:
                target.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=target, prefix=".write-test-"):
                    pass
                continue
            existing = next(p for p in (target, *target.parents) if p.exists() or p == Path(p.anchor))
            if not existing.is_dir():
                raise NotADirectoryError(20, "Not a directory", str(existing))
            if os.statvfs(existing).f_flag & os.ST_RDONLY:
                raise OSError(30, "Read-only file system", str(existing))
            if not os.access(existing, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", str(existing))
        except OSError as exc:
            where = exc.filename if exc.filename and str(exc.filename) != str(target) else None
            because = f"{exc.strerror or exc}" + (f": {where}" if where else "")
            raise BenchError(f"{what} {target} is not writable ({because}); choose another with {option}") from None
