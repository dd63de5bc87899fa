"""What one leaderboard row is: the records averaged together, chosen here for leaderboards,
``bench check`` and ``bench report`` alike (docs/records.md).

A *table* holds records whose numbers mean the same thing and were bought with the same training
budget: same suite name and version, tier, protocol hash (episodes, data, model, metric) and budget
(meta-iterations, validation schedule, warm-up). An *entry*, one row of a table, is one configuration:
the algorithm, its hyperparameters after every override, the algorithm's code version and the
execution options that change what is computed (autocast, compile). Records that differ in any of
these are never averaged together. Of an entry's records, the newest completed one of each
training seed counts, whole: every number of the row comes from those records.

An entry whose configuration is not the suite's default is labelled with what differs, e.g.
``maml [inner_lr=0.02]``, a tuned one (``bench run --tuned``) with its study, e.g.
``maml [tuned, 20 trials, study 1a2b3c4d]``; a table whose budget is not its tier's says so (``budget_changes``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from bench.algorithms import ALGORITHMS
from bench.algorithms.base import parse_hparams
from bench.config import load_suite
from bench.errors import BenchError
from bench.identity import digest, entry_identity, table_identity


@dataclass(frozen=True)
class Defaults:
    """A suite's configuration at one tier: the budget and each algorithm's hyperparameters."""

    budget: dict[str, Any] | None
    hyperparameters: dict[str, dict[str, Any]]  # only for algorithms that are registered


DefaultsOf = Callable[[str, str], Defaults | None]  # (suite name or file, tier) -> defaults, None when unknown


def suite_defaults(suite: str, tier: str) -> Defaults | None:
    """The current suite file's defaults at ``tier``, or None when it cannot be loaded."""
    try:
        loaded = load_suite(suite, tier=tier)
    except BenchError:
        return None
    hyperparameters = {}
    for name in ALGORITHMS.names():
        try:
            values = parse_hparams(ALGORITHMS.get(name), loaded.algorithms.get(name, {}), str(loaded.source_file))
        except BenchError:
            continue
        hyperparameters[name] = values.model_dump(mode="json")
    return Defaults(loaded.budget(), hyperparameters)


@dataclass(frozen=True)
class Entry:
    algorithm: str
    label: str  # the algorithm's name, and in brackets what differs from the suite's default
    variant: tuple[str, ...]  # e.g. ("inner_lr=0.02",), ("older code 1a2b3c4d",), ("autocast=bf16",)
    default: bool  # the suite's default hyperparameters and numerics (published numbers are shown beside these only)
    identity: str
    records: tuple[dict[str, Any], ...]  # the newest completed record of each training seed, by seed

    @property
    def seeds(self) -> list[int]:
        return [r["seeds"]["training_seed"] for r in self.records]


@dataclass(frozen=True)
class Table:
    suite: str
    suite_version: int
    tier: str
    protocol_hash: str
    protocol: dict[str, Any]
    budget: dict[str, Any] | None
    budget_changes: dict[str, list[Any]]  # field -> [this table's value, the tier's]; empty: the tier's budget
    entries: tuple[Entry, ...] = field(default_factory=tuple)

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for entry in self.entries for r in entry.records]


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def newest_per_seed(found: Iterable[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """The newest record (start time, then run id) of each training seed, ordered by seed."""
    newest: dict[int, dict[str, Any]] = {}
    for record in sorted(found, key=lambda r: (r["started_at"], r["run_id"])):
        newest[record["seeds"]["training_seed"]] = record
    return tuple(newest[seed] for seed in sorted(newest))


def _variants(algorithm: str, groups: dict[str, list[dict[str, Any]]], defaults: Defaults | None
              ) -> dict[str, tuple[tuple[str, ...], bool]]:
    """For each entry of one algorithm in one table: what sets it apart, and whether it is the default."""
    identities = {key: entry_identity(found[0]) for key, found in groups.items()}
    reference = (defaults.hyperparameters.get(algorithm) if defaults is not None else None)
    out: dict[str, tuple[tuple[str, ...], bool]] = {}
    for key, identity in identities.items():
        hparams = identity["hyperparameters"]
        tuned = groups[key][0]["algorithm"].get("tuned")
        if tuned:  # its values are the study's: the label names the study, not each value (the record has them)
            parts = [f"tuned, {tuned['trials']} trials, study {str(tuned['study_sha256'])[:8]}"]
            if identity["autocast"]:
                parts.append(f"autocast={identity['autocast']}")
            out[key] = (tuple(parts), False)
            continue
        if reference is not None:
            changed = sorted(k for k in {*hparams, *reference} if hparams.get(k) != reference.get(k))
        else:  # the suite file is gone: name what differs between this algorithm's entries
            others = [i["hyperparameters"] for k, i in identities.items() if k != key]
            changed = sorted(k for k in hparams if any(o.get(k) != hparams[k] for o in others))
        parts = [f"{k}={_shown(hparams.get(k))}" for k in changed]
        if identity["autocast"]:
            parts.append(f"autocast={identity['autocast']}")
        if identity["compile"]:
            parts.append("compile")
        # Entries alike but for their code version: all but the newest code say which older code they ran.
        alike = [k for k, i in identities.items()
                 if {**i, "code_version": None} == {**identity, "code_version": None}]
        if len(alike) > 1:
            newest = max(alike, key=lambda k: max((r["started_at"], r["run_id"]) for r in groups[k]))
            if key != newest:
                parts.append(f"older code {str(identity['code_version'])[:8]}")
        default = reference is not None and not changed and not identity["autocast"] and not identity["compile"]
        out[key] = (tuple(parts), default or (reference is None and not parts))
    return out


def select(found: Iterable[dict[str, Any]], defaults_of: DefaultsOf | None = suite_defaults) -> list[Table]:
    """The tables and entries of ``found`` (completed records only count), in a stable order:
    tables by (suite, version, tier, protocol, budget), entries by label."""
    by_table: dict[str, list[dict[str, Any]]] = {}
    for record in found:
        if record["status"] == "completed":
            by_table.setdefault(digest(table_identity(record)), []).append(record)
    cache: dict[tuple[str, str], Defaults | None] = {}
    tables = []
    for members in by_table.values():
        first = members[0]
        suite = first["suite"]
        where = (suite.get("file") or suite["name"], suite["tier"])
        if defaults_of is not None and where not in cache:
            cache[where] = defaults_of(*where)
            if cache[where] is None and where[0] != suite["name"]:  # the file moved: try the suite by name
                cache[where] = defaults_of(suite["name"], suite["tier"])
        defaults = cache.get(where)
        by_entry: dict[str, list[dict[str, Any]]] = {}
        for record in members:
            by_entry.setdefault(digest(entry_identity(record)), []).append(record)
        by_algorithm: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for key, group in by_entry.items():
            by_algorithm.setdefault(group[0]["algorithm"]["name"], {})[key] = group
        entries = []
        for algorithm, groups in by_algorithm.items():
            for key, (variant, default) in _variants(algorithm, groups, defaults).items():
                label = f"{algorithm} [{', '.join(variant)}]" if variant else algorithm
                entries.append(Entry(algorithm, label, variant, default, key, newest_per_seed(groups[key])))
        labels = [e.label for e in entries]
        entries = [e if labels.count(e.label) == 1 else Entry(e.algorithm, f"{e.label} <{e.identity[:8]}>", e.variant,
                                                              e.default, e.identity, e.records) for e in entries]
        budget = suite.get("budget")
        changes = {}
        if defaults is not None and defaults.budget is not None and budget is not None:
            changes = {k: [budget.get(k), v] for k, v in defaults.budget.items() if budget.get(k) != v}
        tables.append(Table(suite["name"], suite["version"], suite["tier"], suite["protocol_hash"], suite["protocol"],
                            budget, changes, tuple(sorted(entries, key=lambda e: (e.label, e.identity)))))
    return sorted(tables, key=lambda t: (t.suite, t.suite_version, t.tier, t.protocol_hash, bool(t.budget_changes),
                                         json.dumps(t.budget, sort_keys=True)))


def one_entry_per_algorithm(table: Table, where: str) -> dict[str, Entry]:
    """Each algorithm's entry of ``table`` for a comparison of algorithms (``bench check``, baselines):
    its only entry, else its default one; several entries and none the default is an error."""
    chosen: dict[str, Entry] = {}
    for algorithm in sorted({e.algorithm for e in table.entries}):
        candidates = [e for e in table.entries if e.algorithm == algorithm]
        if len(candidates) > 1:
            candidates = [e for e in candidates if e.default]
        if len(candidates) != 1:
            labels = "; ".join(e.label for e in table.entries if e.algorithm == algorithm)
            raise BenchError(f"{where}: {algorithm} has records of several configurations ({labels}) and none is "
                             "the suite's default; keep one configuration's records in the directory")
        chosen[algorithm] = candidates[0]
    return chosen
