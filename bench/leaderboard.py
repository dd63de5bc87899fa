"""Leaderboards built with pandas from stored records only.

Records share a table only when they are comparable: same suite version, tier and protocol
(hash of every protocol field). For each algorithm, the newest completed record per training
seed counts. ``mean`` is the mean over seeds of each seed's test mean; ``ci95`` is the mean over
seeds of each seed's 95% interval over test episodes (episode sampling); ``seed_std`` is the
spread of the seed means (training randomness).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench import records
from bench.config import Suite, load_suite
from bench.errors import BenchError

COLUMNS = ["rank", "algorithm", "family", "mean", "ci95", "seed_std", "n_seeds", "seeds", "n_episodes", "test_steps",
           "meta_train_tasks_per_s", "test_tasks_per_s", "data_share", "peak_mem_mb", "wall_time_s", "published"]
FLOOR = "centroid"  # nearest centroid on frozen sentence embeddings: the floor of the text suites


def _without_model(protocol: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in protocol.items() if k != "model"}, sort_keys=True)


def _floor(frame: pd.DataFrame, version: int, tier: str, protocol: dict[str, Any]) -> float | None:
    """The floor's mean on the same episodes: a centroid record of the same suite, tier and protocol
    except the model (the episodes of a text suite do not depend on the encoder)."""
    if protocol.get("data", {}).get("kind") != "text":
        return None
    same = frame[(frame["algorithm"] == FLOOR) & (frame["suite_version"] == version) & (frame["tier"] == tier)]
    same = same[[_without_model(json.loads(p)) == _without_model(protocol) for p in same["protocol"]]]
    return float(same["mean"].mean()) if len(same) else None


def _not_applicable(suite: Suite | None, protocol: dict[str, Any]) -> dict[str, str]:
    """Registered algorithms that cannot run under this protocol, with the reason each gives."""
    if suite is None:
        return {}
    from bench.algorithms import ALGORITHMS

    try:
        suite = suite.model_copy(update={"model": type(suite.model).model_validate(protocol["model"]),
                                         "batch_norm": protocol.get("batch_norm", suite.batch_norm)})
    except Exception:  # the records' model is not of the suite file's kind any more
        return {}
    return {name: reason for name in ALGORITHMS.names()
            if (reason := ALGORITHMS.get(name).inapplicable(suite)) is not None}


def _published(suite: Suite | None, algorithm: str, protocol: dict[str, Any]) -> str:
    if suite is None:
        return ""
    for entry in suite.published:
        if entry.algorithm == algorithm and all(protocol.get(k) == v for k, v in entry.conditions.items()):
            ci = f" +- {entry.ci95:g}" if entry.ci95 is not None else ""
            return f"{entry.value:g}{ci} ({entry.label}: {entry.source})"
    return ""


def records_frame(results_dir: Path, suite_name: str) -> pd.DataFrame:
    """One row per completed record of ``suite_name``."""
    rows = []
    for record in records.load_records(results_dir, suite_name):
        if record["status"] != "completed":
            continue
        rows.append({
            "suite": record["suite"]["name"],
            "suite_version": record["suite"]["version"],
            "suite_file": record["suite"].get("file"),
            "tier": record["suite"]["tier"],
            "protocol_hash": record["suite"]["protocol_hash"],
            "protocol": json.dumps(record["suite"]["protocol"], sort_keys=True),
            "algorithm": record["algorithm"]["name"],
            "family": record["algorithm"]["family"],
            "hyperparameters": json.dumps(record["algorithm"]["hyperparameters"], sort_keys=True),
            "seed": record["seeds"]["training_seed"],
            "started_at": record["started_at"],
            "mean": record["metric"]["mean"],
            "ci95": record["metric"]["ci95"],
            "n_episodes": record["metric"]["n_episodes"],
            "test_steps": record["metric"]["inner_steps"],
            "lower_is_better": record["metric"]["lower_is_better"],
            "metric": record["metric"]["name"],
            "meta_train_tasks_per_s": record["timing"]["meta_train_tasks_per_s"],
            "test_tasks_per_s": record["timing"]["test_tasks_per_s"],
            "data_share": record["timing"].get("data_share") if record["timing"].get("data_share") is not None else math.nan,
            "peak_mem_mb": record["memory"]["peak_mb"],
            "wall_time_s": record["timing"]["wall_time_s"],
            "path": record["_path"],
        })
    return pd.DataFrame(rows)


def leaderboards(results_dir: Path | str, suite_name: str, tier: str | None = None) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """A (description, table) pair per group of comparable records, best first within each."""
    results_dir = Path(results_dir)
    frame = records_frame(results_dir, suite_name)
    if frame.empty:
        raise BenchError(f"no completed records for suite {suite_name!r} under {results_dir}; run `python -m bench run {suite_name}` first")
    if tier is not None:
        frame = frame[frame["tier"] == tier]
        if frame.empty:
            raise BenchError(f"no completed {tier}-tier records for suite {suite_name!r} under {results_dir}")
    suite = None  # records of a suite file that no longer exists still make a table
    for candidate in (suite_name, *frame["suite_file"].dropna().unique()):
        try:
            suite = load_suite(str(candidate))
            break
        except BenchError:
            continue
    tables = []
    for (version, tier_name, protocol_hash), group in frame.groupby(["suite_version", "tier", "protocol_hash"], sort=True):
        newest = group.sort_values("started_at").groupby(["algorithm", "seed"], as_index=False).last()
        lower = bool(newest["lower_is_better"].iloc[0])
        protocol = json.loads(newest["protocol"].iloc[0])
        table = newest.groupby("algorithm").agg(
            family=("family", "first"),
            mean=("mean", "mean"),
            ci95=("ci95", "mean"),
            seed_std=("mean", lambda s: float(s.std(ddof=1)) if len(s) > 1 else math.nan),
            n_seeds=("seed", "nunique"),
            seeds=("seed", lambda s: ",".join(str(v) for v in sorted(s))),
            n_episodes=("n_episodes", "first"),
            test_steps=("test_steps", "first"),
            meta_train_tasks_per_s=("meta_train_tasks_per_s", "mean"),
            test_tasks_per_s=("test_tasks_per_s", "mean"),
            data_share=("data_share", "mean"),
            peak_mem_mb=("peak_mem_mb", "max"),
            wall_time_s=("wall_time_s", "mean"),
        ).reset_index()
        table = table.sort_values("mean", ascending=lower).reset_index(drop=True)
        table.insert(0, "rank", range(1, len(table) + 1))
        table["published"] = [_published(suite, a, protocol) for a in table["algorithm"]]
        floor = _floor(frame, version, tier_name, protocol)
        columns = COLUMNS
        if floor is not None:
            table["vs_floor"] = table["mean"] - floor
            columns = [*COLUMNS[:5], "vs_floor", *COLUMNS[5:]]
        description = {
            "suite": suite_name, "suite_version": int(version), "tier": tier_name, "protocol_hash": protocol_hash,
            "metric": newest["metric"].iloc[0], "lower_is_better": lower, "protocol": protocol, "floor": floor,
            "not_applicable": _not_applicable(suite, protocol),
        }
        tables.append((description, table[columns]))
    return tables


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
    backbone = {"conv4": lambda m: f"Conv-4-{m['filters']}", "resnet12": lambda m: "ResNet-12",
                "mlp": lambda m: "MLP " + "-".join(str(w) for w in m["hidden"]),
                "text": _text_encoder}
    parts.append(backbone.get(model.get("kind"), lambda m: str(m.get("kind")))(model))
    return ", ".join(parts)


def _text_encoder(model: dict[str, Any]) -> str:
    above = f" + MLP {'-'.join(str(w) for w in model['hidden'])}" if model.get("hidden") else ""
    if model.get("encoder") == "minilm":
        return f"encoder frozen all-MiniLM-L6-v2{above}"
    return (f"encoder word-CNN from scratch ({model['embedding_dim']}-d words, {model['filters']} filters of width "
            f"{model['kernel_size']}, {model['max_tokens']} tokens, vocabulary {model['vocabulary_size']}){above}")


def _notes(description: dict[str, Any]) -> str:
    """The floor and the algorithms that cannot run here, with why: shown under the table."""
    lines = []
    if description.get("floor") is not None:
        lines.append(f"vs_floor: difference from the floor, {FLOOR} (nearest centroid on frozen all-MiniLM-L6-v2 "
                     f"embeddings) = {description['floor']:.4g} on the same test episodes.")
    if description.get("not_applicable"):
        by_reason: dict[str, list[str]] = {}
        for name, why in description["not_applicable"].items():
            by_reason.setdefault(why, []).append(name)
        reasons = "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items())
        lines.append(f"Not applicable here: {reasons}.")
    return "\n".join(lines)


def _title(description: dict[str, Any]) -> str:
    protocol = description["protocol"]
    better = "lower is better" if description["lower_is_better"] else "higher is better"
    if protocol.get("ways") is not None:
        episodes = (f"test {protocol['ways']}-way {protocol['shots']}-shot, {protocol['queries']} queries per class; "
                    f"train {protocol['train_ways']}-way {protocol['train_shots']}-shot, {protocol['train_queries']} queries; "
                    f"batch norm {protocol['batch_norm']}")
    else:
        episodes = f"{protocol['shots']} shots, {protocol['queries']} queries"
    return (f"{description['suite']} v{description['suite_version']}, {description['tier']} tier, "
            f"protocol {description['protocol_hash']}: {description['metric']} ({better}), {episodes}, "
            f"{protocol['test_tasks']} test episodes, {protocol['test_inner_steps']} test inner steps, "
            f"{_data_summary(protocol.get('data', {}), protocol.get('model', {}))}")


def render(tables: list[tuple[dict[str, Any], pd.DataFrame]], fmt: str = "table") -> str:
    if fmt == "json":
        out = []
        for description, table in tables:
            for row in table.astype(object).where(table.notna(), None).to_dict(orient="records"):
                row = {k: v.item() if hasattr(v, "item") else v for k, v in row.items()}
                row["seeds"] = [int(s) for s in row["seeds"].split(",")]
                out.append({**row, "suite": description["suite"], "tier": description["tier"],
                            "protocol_hash": description["protocol_hash"], "metric": description["metric"],
                            "lower_is_better": description["lower_is_better"]})
        return json.dumps(out, indent=1)
    if fmt == "csv":
        return "".join(
            table.assign(tier=d["tier"], protocol_hash=d["protocol_hash"], metric=d["metric"]).to_csv(index=False, header=(i == 0))
            for i, (d, table) in enumerate(tables)
        )
    if fmt == "markdown":
        return "\n\n".join(f"**{_title(d)}**\n\n{_markdown(t)}" + (f"\n\n{_notes(d)}" if _notes(d) else "")
                           for d, t in tables)
    if fmt == "table":
        with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_colwidth", 60):
            return "\n\n".join(f"{_title(d)}\n{t.to_string(index=False, float_format=lambda v: f'{v:.4g}')}"
                               + (f"\n{_notes(d)}" if _notes(d) else "") for d, t in tables)
    raise BenchError(f"unknown format {fmt!r}; use table, json, csv or markdown")
