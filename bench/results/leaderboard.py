"""Leaderboards built with pandas from stored records only.

Which records share a table and which are averaged into one row is decided by
:mod:`bench.results.entries`: a table is one (suite version, tier, protocol, budget), a row one
configuration (algorithm, hyperparameters, code version, numerics), labelled with what differs
from the suite's default (``maml [inner_lr=0.02]``). ``mean`` is the mean over seeds of each
seed's test mean; ``ci95`` is the mean over seeds of each seed's 95% interval over test episodes
(episode sampling); ``seed_std`` is the spread of the seed means (training randomness).

Ranks: entries tie unless a paired t-test on the identical test episodes (each algorithm's
per-episode metric averaged over its seeds) finds a difference at the 5% level; tied entries share
their average rank (``bench.stats.ranks_with_ties``). Where the episode lists differ the
Meta-Dataset interval rule decides instead, and the table's description says which was used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import records
from bench.algorithms import ALGORITHMS
from bench.config import PublishedResult, Suite, load_suite
from bench.errors import BenchError
from bench.results import entries
from bench.stats import ALPHA, PAIRED_TEST, UNPAIRED_RULE, paired_p_value, ranks_with_ties

COLUMNS = ["rank", "algorithm", "family", "mean", "ci95", "seed_std", "n_seeds", "seeds", "n_episodes", "test_steps",
           "meta_train_tasks_per_s", "test_tasks_per_s", "data_share", "peak_mem_mb", "wall_time_s", "published",
           "published_value", "published_ci95", "published_source", "published_diff", "tie_group",
           "registered_algorithm", "variant", "entry_id"]
# In JSON and CSV only; the printed tables show the rank, the published text and the label (algorithm [variant]).
SHOWN_APART = ("published_value", "published_ci95", "published_source", "tie_group", "registered_algorithm", "variant",
               "entry_id")
FLOOR = "centroid"  # nearest centroid on frozen sentence embeddings: the floor of the text suites


def _without_model(protocol: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in protocol.items() if k != "model"}, sort_keys=True)


@dataclass(frozen=True)
class Floor:
    """The floor's mean, and its per-episode values (averaged over seeds) where its records give them."""

    mean: float
    per_episode: np.ndarray | None


def _floor(tables: list[entries.Table], table: entries.Table) -> Floor | None:
    """The floor on the same episodes: the default centroid entry of a table of the same suite
    version, tier, protocol except the model (the episodes of a text suite do not depend on the
    encoder) and budget."""
    if table.protocol.get("data", {}).get("kind") != "text":
        return None
    found = [entry.records for other in tables
             if (other.suite_version, other.tier, other.budget) == (table.suite_version, table.tier, table.budget)
             and _without_model(other.protocol) == _without_model(table.protocol)
             for entry in other.entries if entry.algorithm == FLOOR and entry.default]
    if not found:
        return None
    mean = float(np.mean([float(np.mean([r["metric"]["mean"] for r in floor_records])) for floor_records in found]))
    values = [r["metric"].get("per_task") for floor_records in found for r in floor_records]
    if any(v is None for v in values) or len({len(v) for v in values}) != 1:
        return Floor(mean, None)
    return Floor(mean, np.mean(np.array(values, dtype=np.float64), axis=0))


def _not_applicable(suite: Suite | None, protocol: dict[str, Any]) -> dict[str, str]:
    """Registered algorithms that cannot run under this protocol, with the reason each gives."""
    if suite is None:
        return {}
    try:
        suite = suite.model_copy(update={"model": type(suite.model).model_validate(protocol["model"]),
                                         "batch_norm": protocol.get("batch_norm", suite.batch_norm)})
    except Exception:  # the records' model is not of the suite file's kind any more
        return {}
    return {name: reason for name in ALGORITHMS.names()
            if (reason := ALGORITHMS.get(name).inapplicable(suite)) is not None}


def published_entry(suite: Suite | None, algorithm: str, protocol: dict[str, Any]) -> PublishedResult | None:
    """The suite's published number for ``algorithm`` under this protocol, if there is one."""
    if suite is None:
        return None
    for entry in suite.published:
        if entry.algorithm == algorithm and all(protocol.get(k) == v for k, v in entry.conditions.items()):
            return entry
    return None


def _published_text(entry: PublishedResult | None) -> str:
    if entry is None:
        return ""
    ci = f" +- {entry.ci95:g}" if entry.ci95 is not None else ""
    return f"{entry.value:g}{ci} ({entry.label}: {entry.source})"


def per_episode_means(table: entries.Table) -> dict[str, np.ndarray] | None:
    """Each entry's per-episode metric averaged over its seeds, when every record of the table was
    tested on the same episodes (``records.test_episodes_differ``); otherwise None (no paired test possible)."""
    found = table.records
    values = [r["metric"].get("per_task") for r in found]
    if records.test_episodes_differ(found) is not None or any(v is None for v in values):
        return None
    if len({len(v) for v in values}) != 1:  # records that disagree about the episodes: no pairing
        return None
    return {entry.label: np.mean(np.array([r["metric"]["per_task"] for r in entry.records], dtype=np.float64), axis=0)
            for entry in table.entries}


def rank(table: pd.DataFrame, per_episode: dict[str, np.ndarray] | None) -> tuple[list[float], list[int], str]:
    """Average ranks with ties (the table is sorted best first), the tie groups, and the test used."""
    algorithms = list(table["algorithm"])
    if per_episode is not None:
        def differ(i: int, j: int) -> bool:
            return paired_p_value(per_episode[algorithms[i]], per_episode[algorithms[j]]) < ALPHA
        test = PAIRED_TEST + " (per-episode values averaged over seeds)"
    else:
        means, cis = list(table["mean"]), list(table["ci95"])

        def differ(i: int, j: int) -> bool:
            return abs(means[i] - means[j]) > math.sqrt(cis[i] ** 2 + cis[j] ** 2)
        test = UNPAIRED_RULE
    ranks, groups = ranks_with_ties(len(table), differ)
    return ranks, groups, test


def _mean_of(values: list[float | None]) -> float:
    """The mean of the measured values (a run too short to be timed stores null), NaN if none was."""
    present = [float(v) for v in values if v is not None]
    return float(np.mean(present)) if present else math.nan


def _row(entry: entries.Entry) -> dict[str, Any]:
    """One entry's row: every number from the entry's own records (the newest of each seed)."""
    found = entry.records
    means = [r["metric"]["mean"] for r in found]
    return {
        "algorithm": entry.label,
        "family": found[0]["algorithm"]["family"],
        "mean": float(np.mean(means)),
        "ci95": float(np.mean([r["metric"]["ci95"] for r in found])),
        "seed_std": float(np.std(means, ddof=1)) if len(means) > 1 else math.nan,
        "n_seeds": len(found),
        "seeds": ",".join(str(s) for s in entry.seeds),
        "n_episodes": found[0]["metric"]["n_episodes"],
        "test_steps": found[0]["metric"]["inner_steps"],
        "meta_train_tasks_per_s": _mean_of([r["timing"]["meta_train_tasks_per_s"] for r in found]),
        "test_tasks_per_s": _mean_of([r["timing"]["test_tasks_per_s"] for r in found]),
        "data_share": _mean_of([r["timing"].get("data_share") for r in found]),
        "peak_mem_mb": max(r["memory"]["peak_mb"] for r in found),
        "wall_time_s": float(np.mean([r["timing"]["wall_time_s"] for r in found])),
        "registered_algorithm": entry.algorithm,
        "variant": ", ".join(entry.variant),
        "entry_id": entry.identity,
    }


def _current_suite(suite_name: str, found: list[dict[str, Any]]) -> Suite | None:
    """The suite file as it is now (published numbers, applicability); None once it no longer exists."""
    for candidate in (suite_name, *sorted({r["suite"].get("file") for r in found if r["suite"].get("file")})):
        try:
            return load_suite(str(candidate))
        except BenchError:
            continue
    return None


def leaderboards(results_dir: Path | str, suite_name: str, tier: str | None = None) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """A (description, table) pair per table of comparable records (``bench.results.entries``), best first
    within each: the suite's own runs, then its cross-domain tables (``bench evaluate`` records of models
    trained elsewhere, one table per training suite, protocol and budget; ``description["trained_on"]``)."""
    results_dir = Path(results_dir)
    found = [r for r in records.load_records(results_dir, suite_name) if r["status"] == "completed"]
    evaluated = [r for r in records.load_evaluation_records(results_dir, suite_name) if r["status"] == "completed"]
    if not found and not evaluated:
        raise BenchError(f"no completed records for suite {suite_name!r} under {results_dir}; "
                         f"run `python -m bench run {suite_name}` first")
    if tier is not None:
        found = [r for r in found if r["suite"]["tier"] == tier]
        evaluated = [r for r in evaluated if r["suite"]["tier"] == tier]
        if not found and not evaluated:
            raise BenchError(f"no completed {tier}-tier records for suite {suite_name!r} under {results_dir}")
    suite = _current_suite(suite_name, found + evaluated)
    own = entries.select(found)
    boards = [_board(table, suite_name, _floor(own, table), suite) for table in own]
    by_training: dict[str, list[dict[str, Any]]] = {}
    for record in evaluated:
        by_training.setdefault(json.dumps(record["suite"]["protocol"]["trained_on"], sort_keys=True), []).append(record)
    for key in sorted(by_training):
        trained_on = json.loads(key)
        # Labels and budget changes against the training suite's defaults: that is where the model's configuration came from.
        training_defaults = entries.suite_defaults(trained_on["suite"], trained_on["tier"])
        for table in entries.select(by_training[key], lambda *_, found=training_defaults: found):
            boards.append(_board(table, suite_name, None, None, trained_on))
    return boards


def _board(table_entries: entries.Table, suite_name: str, floor: Floor | None, suite: Suite | None,
           trained_on: dict[str, Any] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """One table's rows, ranked; published numbers (of ``suite``, the current file) beside its default entries.
    A cross-domain table (``trained_on``) shows none: they were measured on models trained on the target."""
    lower = bool(table_entries.records[0]["metric"]["lower_is_better"])
    protocol = table_entries.protocol
    table = pd.DataFrame([_row(e) for e in table_entries.entries])
    table = table.sort_values(["mean", "algorithm"], ascending=[lower, True]).reset_index(drop=True)
    per_episode = per_episode_means(table_entries)
    ranks, groups, tie_test = rank(table, per_episode)
    table.insert(0, "rank", ranks)
    table["tie_group"] = groups
    by_label = {e.label: e for e in table_entries.entries}
    published = [published_entry(suite, by_label[label].algorithm, protocol) if by_label[label].default else None
                 for label in table["algorithm"]]
    table["published"] = [_published_text(e) for e in published]
    table["published_value"] = [e.value if e else math.nan for e in published]
    table["published_ci95"] = [e.ci95 if e and e.ci95 is not None else math.nan for e in published]
    table["published_source"] = [f"{e.label}: {e.source}" if e else "" for e in published]
    table["published_diff"] = table["mean"] - table["published_value"]
    columns = COLUMNS
    if floor is not None:
        table["vs_floor"] = table["mean"] - floor.mean
        # The paired test of the ranks, against the floor: whether a difference from "do nothing" is more than noise.
        table["vs_floor_p"] = [paired_p_value(per_episode[label], floor.per_episode)
                               if per_episode is not None and floor.per_episode is not None
                               and len(per_episode[label]) == len(floor.per_episode) else math.nan
                               for label in table["algorithm"]]
        columns = [*COLUMNS[:5], "vs_floor", "vs_floor_p", *COLUMNS[5:]]
    description = {
        "suite": suite_name, "suite_version": int(table_entries.suite_version), "tier": table_entries.tier,
        "protocol_hash": table_entries.protocol_hash, "metric": table_entries.records[0]["metric"]["name"],
        "lower_is_better": lower, "protocol": protocol, "budget": table_entries.budget,
        "budget_changes": table_entries.budget_changes, "floor": floor.mean if floor is not None else None,
        "not_applicable": _not_applicable(suite, protocol), "tie_test": tie_test,
        "n_records": len(table_entries.records), "record_paths": sorted(r["_path"] for r in table_entries.records),
        "entry_records": {e.label: [r["_path"] for r in e.records] for e in table_entries.entries},
        "trained_on": trained_on,
    }
    return description, table[columns]


def average_ranks(boards: list[tuple[dict[str, Any], pd.DataFrame]]) -> pd.DataFrame:
    """Each algorithm's rank averaged over the given tables (one per suite and setting).

    An algorithm is averaged over the tables it appears in (``n_tables`` says how many), so
    compare averages of entries with the same ``n_tables``.
    """
    ranks: dict[str, list[float]] = {}
    for _, table in boards:
        for algorithm, value in zip(table["algorithm"], table["rank"], strict=True):
            ranks.setdefault(algorithm, []).append(float(value))
    frame = pd.DataFrame([{"algorithm": a, "average_rank": float(np.mean(r)), "n_tables": len(r)}
                          for a, r in ranks.items()], columns=["algorithm", "average_rank", "n_tables"])
    return frame.sort_values(["n_tables", "average_rank", "algorithm"], ascending=[False, True, True]).reset_index(drop=True)


def _markdown(table: pd.DataFrame) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines)


def _data_summary(data: dict[str, Any], model: dict[str, Any]) -> str:
    """Image size, preprocessing and backbone, e.g. '28x28 lanczos, strokes 1, Conv-4-64'."""
    parts = []
    if "image_size" in data:
        parts.append(f"{data['image_size']}x{data['image_size']} {data.get('resize_filter', '')}".strip())
    if "strokes" in data:
        parts.append(f"strokes {data['strokes']}")
    if data.get("mean") is not None:
        parts.append("mean/std normalised")
    if data.get("kind") == "text":
        parts.append(f"{data.get('format')} data")
    backbone = {"conv4": lambda m: f"Conv-4-{m.get('filters')}", "resnet12": lambda m: "ResNet-12",
                "mlp": lambda m: "MLP " + "-".join(str(w) for w in m.get("hidden", [])),
                "text": _text_encoder}
    parts.append(backbone.get(str(model.get("kind")), lambda m: str(m.get("kind")))(model))
    return ", ".join(parts)


def _text_encoder(model: dict[str, Any]) -> str:
    above = f" + MLP {'-'.join(str(w) for w in model['hidden'])}" if model.get("hidden") else ""
    if model.get("encoder") == "minilm":
        return f"encoder frozen all-MiniLM-L6-v2{above}"
    if model.get("encoder") == "minilm-finetune":
        layers = model.get("finetune_layers")
        trained = "every layer and the embeddings" if layers == "all" else f"top {layers} of 6 layers"
        return f"encoder all-MiniLM-L6-v2 fine-tuned ({trained} trained, {model.get('pooling')} pooling){above}"
    return (f"encoder word-CNN from scratch ({model.get('embedding_dim')}-d words, {model.get('filters')} filters of "
            f"width {model.get('kernel_size')}, {model.get('max_tokens')} tokens, vocabulary "
            f"{model.get('vocabulary_size')}){above}")


def _notes(description: dict[str, Any]) -> str:
    """The floor and the algorithms that cannot run here, with why: shown under the table."""
    lines = []
    if description.get("tie_test"):
        lines.append(f"rank: tied entries share their average rank; two entries tie unless a {description['tie_test']} "
                     "finds a difference. published_diff: ours - published.")
    if description.get("floor") is not None:
        lines.append(f"vs_floor: difference from the floor, {FLOOR} (nearest centroid on frozen all-MiniLM-L6-v2 "
                     f"embeddings) = {description['floor']:.4g} on the same test episodes; vs_floor_p: the p-value of the "
                     "same paired t-test against the floor's per-episode values (below 0.05: a difference from it).")
    if description.get("not_applicable"):
        by_reason: dict[str, list[str]] = {}
        for name, why in description["not_applicable"].items():
            by_reason.setdefault(why, []).append(name)
        reasons = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
        lines.append(f"Not applicable here: {reasons}.")
    return "\n".join(lines)


def _episode_origin(protocol: dict[str, Any]) -> str:
    sha256 = protocol.get("test_episodes_sha256")
    return f" from an episode file (SHA-256 {sha256[:12]})" if sha256 else ""


def title(description: dict[str, Any]) -> str:
    protocol = description["protocol"]
    trained = description.get("trained_on")
    origin = (f"cross-domain: models trained on {trained['suite']} v{trained['suite_version']} ({trained['tier']} tier, "
              f"protocol {trained['protocol_hash']}) evaluated on " if trained else "")
    better = "lower is better" if description["lower_is_better"] else "higher is better"
    if protocol.get("ways") is not None:
        # A cross-domain model met the training suite's episodes, not the target's training shape.
        training = ("" if trained else f"train {protocol['train_ways']}-way {protocol['train_shots']}-shot, "
                    f"{protocol['train_queries']} queries; ")
        episodes = (f"test {protocol['ways']}-way {protocol['shots']}-shot, {protocol['queries']} queries per class; "
                    f"{training}batch norm {protocol['batch_norm']}")
    else:
        episodes = f"{protocol['shots']} shots, {protocol['queries']} queries"
    changes = description.get("budget_changes") or {}
    budget = ("; training budget not the tier's: " if trained else "; budget not the tier's: ")
    budget = (budget + ", ".join(f"{k} {new} (tier: {tier})" for k, (new, tier) in changes.items())
              if changes else "")
    return (f"{origin}{description['suite']} v{description['suite_version']}, {description['tier']} tier, "
            f"protocol {description['protocol_hash']}: {description['metric']} ({better}), {episodes}, "
            f"{protocol['test_tasks']} test episodes{_episode_origin(protocol)}, "
            f"{protocol['test_inner_steps']} test inner steps, "
            f"{_data_summary(protocol.get('data', {}), protocol.get('model', {}))}{budget}")


def render(tables: list[tuple[dict[str, Any], pd.DataFrame]], fmt: str = "table") -> str:
    if fmt == "json":
        out = []
        for description, table in tables:
            for row in table.astype(object).where(table.notna(), None).to_dict(orient="records"):
                row = {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
                row["seeds"] = [int(s) for s in row["seeds"].split(",")]
                out.append({**row, "suite": description["suite"], "tier": description["tier"],
                            "protocol_hash": description["protocol_hash"], "metric": description["metric"],
                            "lower_is_better": description["lower_is_better"],
                            **({"trained_on": description["trained_on"]} if description.get("trained_on") else {})})
        return json.dumps(out, indent=1)
    if fmt == "csv":
        # One header for every table (only text suites have vs_floor): concatenate, then write.
        return pd.concat([table.assign(suite=d["suite"], tier=d["tier"], protocol_hash=d["protocol_hash"], metric=d["metric"])
                          for d, table in tables], ignore_index=True).to_csv(index=False)
    shown = [(d, t.drop(columns=[c for c in SHOWN_APART if c in t])) for d, t in tables]
    if fmt == "markdown":
        return "\n\n".join(f"**{title(d)}**\n\n{_markdown(t)}" + (f"\n\n{_notes(d)}" if _notes(d) else "")
                           for d, t in shown)
    if fmt == "table":
        with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 60):
            return "\n\n".join(f"{title(d)}\n{t.to_string(index=False, float_format=lambda v: f'{v:.4g}')}"
                               + (f"\n{_notes(d)}" if _notes(d) else "") for d, t in shown)
    raise BenchError(f"unknown format {fmt!r}; use table, json, csv or markdown")
