"""Regression checks against a baseline (``bench check``) and writing baselines (``bench baseline``).

A baseline is one JSON file under ``results/baselines/`` made from run records (or, given as a
directory, the records themselves). For every algorithm it keeps the per-episode test metric
(averaged over seeds), the hash of the test episodes, the protocol, the hyperparameters, the task
chunk the runs took, throughput, peak memory, the machine class and the records it came from.

Judgement, per algorithm:
- metric: a regression when the new runs are worse by at least the minimum effect size AND a
  one-sided paired t-test on the identical test episodes finds them worse at level ``alpha``.
  Direction-aware: lower is better for MSE. The minimum effect is absolute for accuracy
  (percentage points) and relative for error metrics (a share of the baseline's value).
- throughput (meta-train tasks/s, test episodes/s) and peak memory: a ratio against the baseline
  with a tolerance, judged only when the baseline was measured on the same machine class and both
  timed segments last long enough to be measured; otherwise reported and not judged. A throughput
  regression is called only after a second timing: the algorithms that came out too slow run once
  more and the faster of the two timings is judged, so one burst of other work on the host cannot
  fail a check (measured: an unchanged rerun's 0.44x, re-timed at once, came out at 0.74x). A real
  slowdown is slow both times.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench import records
from bench.config import load_suite
from bench.errors import BenchError
from bench.formatting import relative_path, significant
from bench.results import entries
from bench.run.environment import git_state
from bench.run.execution import ExecutionOptions, recorded_eval_chunk
from bench.run.executors import execute
from bench.run.runner import Overrides, plan_run
from bench.stats import paired_p_value

log = logging.getLogger(__name__)

BASELINE_FORMAT = 1
# Minimum effect per metric: (kind, size). Accuracy is in percent, so 2.0 is two points.
MIN_EFFECT = {"accuracy": ("absolute", 2.0), "mse": ("relative", 0.10)}
# Shorter timings are mostly timer and scheduler noise: reported, not judged. Meta-training is
# judged by its median step, so a whole loop of 0.5 s is enough; the test set is one timed call,
# which one burst of other work can double, so it needs longer (measured: a 1 s test timing of an
# unchanged rerun came out at 0.44x).
MIN_TIMED_SECONDS = {"meta-train tasks/s": 0.5, "test episodes/s": 2.0}


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.05
    min_effect: float | None = None  # None: the metric's default in MIN_EFFECT
    speed_tolerance: float = 0.5  # a regression below (1 - tolerance) x the baseline's throughput
    memory_tolerance: float = 0.5  # a regression above (1 + tolerance) x the baseline's peak memory

    def effect(self, metric: str) -> tuple[str, float]:
        kind, size = MIN_EFFECT.get(metric, ("relative", 0.10))
        return kind, size if self.min_effect is None else self.min_effect

    def check(self) -> None:
        if not 0 < self.alpha < 1:
            raise BenchError(f"--alpha {self.alpha}: expected a level between 0 and 1, e.g. 0.05")
        if self.min_effect is not None and not 0 <= self.min_effect < math.inf:
            raise BenchError(f"--min-effect {self.min_effect}: expected a finite size >= 0")
        if not 0 <= self.speed_tolerance < 1:
            raise BenchError(f"--speed-tolerance {self.speed_tolerance}: expected a share in [0, 1), e.g. 0.5")
        if not 0 <= self.memory_tolerance < math.inf:
            raise BenchError(f"--memory-tolerance {self.memory_tolerance}: expected a finite share >= 0, e.g. 0.5")


def machine_class(environment: dict[str, Any]) -> dict[str, Any]:
    """What throughput and memory depend on: device, its model, cores, threads, torch's version."""
    return {
        "device_type": str(environment.get("device", "cpu")).split(":")[0],
        "device_name": environment.get("device_name"),
        "cpu_count": environment.get("cpu_count"),
        # The instruction set torch dispatches to (records before it was kept: None, another class).
        "cpu_capability": (environment.get("cpu_identity") or {}).get("capability") if str(
            environment.get("device", "cpu")).startswith("cpu") else None,
        "torch_threads": environment.get("torch_threads"),
        "torch": ".".join(str(environment.get("torch", "")).split("+")[0].split(".")[:2]),
    }


@dataclass
class Entry:
    """One algorithm's results on a suite tier: what a baseline stores and a check compares."""

    algorithm: str
    metric: str
    lower_is_better: bool
    per_task: list[float]
    mean: float
    ci95: float
    seeds: list[int]
    suite_version: int
    protocol_hash: str
    test_sha256: str | None
    hyperparameters: dict[str, Any]
    task_chunk: int | None
    meta_train_tasks_per_s: float | None
    test_tasks_per_s: float | None
    meta_train_seconds: float | None
    test_seconds: float | None
    peak_mem_mb: float | None
    machine_class: dict[str, Any] | None
    records: list[str] = field(default_factory=list)
    test_contents_sha256: str | None = None  # baselines written before contents were hashed have none
    eval_chunk: int | None = None  # baselines written before it was chosen apart: their task_chunk


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present and len(present) == len(values) else None


def entries_from_records(results_dir: Path, suite: str, tier: str, protocol_hash: str | None = None,
                         algorithms: list[str] | None = None) -> dict[str, Entry]:
    """One entry per algorithm from the completed records of ``suite``/``tier`` under ``results_dir``,
    chosen as leaderboards choose them (``bench.results.entries``): one table (protocol and budget), each
    algorithm's one configuration (its only one, else the suite's default), the newest record per seed.

    With ``protocol_hash`` only records of that protocol count; without it every record must
    share one protocol (else there is no single baseline to speak of)."""
    found = [r for r in records.load_records(results_dir, suite)
             if r["status"] == "completed" and r["suite"]["tier"] == tier
             and (protocol_hash is None or r["suite"]["protocol_hash"] == protocol_hash)
             and (algorithms is None or r["algorithm"]["name"] in algorithms)]
    if not found:
        raise BenchError(f"no completed {tier}-tier records of suite {suite!r} under {results_dir}"
                         + (f" with protocol {protocol_hash}" if protocol_hash else "")
                         + f"; run `python -m bench run {suite} --tier {tier} --results-dir {results_dir}` first")
    tables = entries.select(found)
    protocols = {t.protocol_hash for t in tables}
    if len(protocols) > 1:
        raise BenchError(f"{results_dir}: the {tier}-tier records of {suite!r} have {len(protocols)} protocols "
                         f"({', '.join(sorted(protocols))}); keep one protocol's records in the directory")
    if len(tables) > 1:
        budgets = "; ".join(json.dumps(t.budget, sort_keys=True) for t in tables)
        raise BenchError(f"{results_dir}: the {tier}-tier records of {suite!r} have {len(tables)} training budgets "
                         f"({budgets}); keep one budget's records in the directory")
    chosen = entries.one_entry_per_algorithm(tables[0], str(results_dir))
    return {algorithm: _entry(list(entry.records)) for algorithm, entry in chosen.items()}


def entries_from_run(done: list[dict[str, Any]]) -> dict[str, Entry]:
    """One entry per algorithm from the completed records ``execute`` just returned."""
    chosen: dict[str, Entry] = {}
    for table in entries.select(done):
        for algorithm, entry in entries.one_entry_per_algorithm(table, "the runs just made").items():
            chosen[algorithm] = _entry(list(entry.records))
    return chosen


def _entry(runs: list[dict[str, Any]]) -> Entry:
    first = runs[0]
    values = [r["metric"].get("per_task") for r in runs]
    differ = records.test_episodes_differ(runs)
    if differ is None and (any(v is None for v in values) or len({len(v) for v in values}) != 1):
        differ = "they do not all hold per-episode values of the same number of episodes"
    if differ is not None:
        paths = ", ".join(str(r.get("_path", f"seed {r['seeds']['training_seed']}")) for r in runs)
        raise BenchError(f"{first['algorithm']['name']}: its records ({paths}) cannot be paired: {differ}; "
                         "a paired comparison needs them: rerun the algorithm or move the odd record away")
    per_task = np.mean(np.array(values, dtype=np.float64), axis=0)
    classes = [machine_class(r["environment"]) for r in runs]
    chunks = {(r.get("execution") or {}).get("task_chunk") for r in runs}
    eval_chunks = {recorded_eval_chunk(r.get("execution") or {}) for r in runs}
    return Entry(
        algorithm=first["algorithm"]["name"], metric=first["metric"]["name"],
        lower_is_better=first["metric"]["lower_is_better"], per_task=per_task.tolist(),
        mean=float(np.mean([r["metric"]["mean"] for r in runs])), ci95=float(np.mean([r["metric"]["ci95"] for r in runs])),
        seeds=[r["seeds"]["training_seed"] for r in runs], suite_version=first["suite"]["version"],
        protocol_hash=first["suite"]["protocol_hash"], test_sha256=first["seeds"]["test_episodes"]["sha256"],
        test_contents_sha256=next((r["seeds"]["test_episodes"].get("contents_sha256") for r in runs
                                   if r["seeds"]["test_episodes"].get("contents_sha256")), None),
        hyperparameters=first["algorithm"]["hyperparameters"],
        task_chunk=chunks.pop() if len(chunks) == 1 else None,
        eval_chunk=eval_chunks.pop() if len(eval_chunks) == 1 else None,
        meta_train_tasks_per_s=_mean([r["timing"].get("meta_train_tasks_per_s_median", r["timing"]["meta_train_tasks_per_s"])
                                      for r in runs]),
        test_tasks_per_s=_mean([r["timing"]["test_tasks_per_s"] for r in runs]),
        meta_train_seconds=_mean([r["timing"].get("meta_train_seconds") for r in runs]),
        test_seconds=_mean([r["timing"].get("test_seconds") for r in runs]),
        peak_mem_mb=max(r["memory"]["peak_mb"] for r in runs),
        machine_class=classes[0] if all(c == classes[0] for c in classes) else None,
        records=[relative_path(Path(r["_path"]), Path.cwd()) for r in runs],
    )


@dataclass
class Baseline:
    suite: str
    tier: str
    entries: dict[str, Entry]
    source: str
    created_at: str | None = None
    git: dict[str, Any] | None = None
    thresholds: dict[str, Any] | None = None

    @property
    def protocol_hash(self) -> str:
        return next(iter(self.entries.values())).protocol_hash

    def to_json(self) -> str:
        return json.dumps({"format": BASELINE_FORMAT, "suite": self.suite, "tier": self.tier,
                           "created_at": self.created_at, "git": self.git, "thresholds": self.thresholds,
                           "entries": {name: asdict(entry) for name, entry in sorted(self.entries.items())}},
                          indent=1, allow_nan=False) + "\n"


def load_baseline(path: Path, suite: str, tier: str | None) -> Baseline:
    """A baseline file, or a directory of records (the newest per algorithm and seed count)."""
    if path.is_dir():
        return Baseline(suite, tier or "smoke", entries_from_records(path, suite, tier or "smoke"), source=str(path))
    if not path.is_file():
        raise BenchError(f"--baseline {path}: no such file or directory; committed baselines are under results/baselines/ "
                         "(write one with `python -m bench baseline SUITE --tier smoke`)")
    try:
        data = json.loads(path.read_text())
        if data.get("format") != BASELINE_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, this bench reads {BASELINE_FORMAT}")
        entries = {name: Entry(**values) for name, values in data["entries"].items()}
        if not entries:
            raise ValueError("no entries")
        baseline = Baseline(data["suite"], data["tier"], entries, str(path), data.get("created_at"), data.get("git"),
                            data.get("thresholds"))
    except (ValueError, KeyError, TypeError, AttributeError, OSError, RecursionError) as exc:
        raise BenchError(f"--baseline {path}: not a readable bench baseline ({' '.join(str(exc).split())}); "
                         "restore it from git or write a new one with `python -m bench baseline`") from None
    if baseline.suite != suite:
        raise BenchError(f"--baseline {path} is a baseline of suite {baseline.suite!r}, not {suite!r}")
    if tier is not None and baseline.tier != tier:
        raise BenchError(f"--baseline {path} is a {baseline.tier}-tier baseline; you asked for --tier {tier}")
    return baseline


def write_baseline(baseline: Baseline, path: Path, replace: bool = False) -> None:
    if path.exists() and not replace:
        raise BenchError(f"{path} exists; pass --replace to overwrite it deliberately (the old one stays in git history)")
    records.write_atomic(path, baseline.to_json())


# --- comparison -------------------------------------------------------------------------------

def _differences(base: Entry, new: Entry) -> dict[str, Any]:
    return {k: [base.hyperparameters.get(k), new.hyperparameters.get(k)]
            for k in sorted({*base.hyperparameters, *new.hyperparameters})
            if base.hyperparameters.get(k) != new.hyperparameters.get(k)}


def compare_metric(base: Entry, new: Entry, thresholds: Thresholds) -> dict[str, Any]:
    kind, size = thresholds.effect(base.metric)
    sign = -1.0 if base.lower_is_better else 1.0  # improvement = sign * (new - base)
    improvement = sign * (new.mean - base.mean)
    threshold = size if kind == "absolute" else size * abs(base.mean)
    # One-sided: is the new per-episode metric worse than the baseline's on the same episodes?
    p_worse = paired_p_value(new.per_task, base.per_task, alternative="greater" if base.lower_is_better else "less")
    identical = new.per_task == base.per_task
    worse = improvement < -threshold and p_worse < thresholds.alpha
    better = improvement > threshold and paired_p_value(
        new.per_task, base.per_task, alternative="less" if base.lower_is_better else "greater") < thresholds.alpha
    return {
        "metric": base.metric, "lower_is_better": base.lower_is_better, "baseline": base.mean, "new": new.mean,
        "improvement": improvement, "min_effect": {"kind": kind, "size": size, "in_metric_units": threshold},
        "p_worse": p_worse, "identical_episodes_values": identical,
        "verdict": "regression" if worse else "improvement" if better else "ok",
    }


def compare_ratio(name: str, base: float | None, new: float | None, base_seconds: float | None, new_seconds: float | None,
                  higher_is_better: bool, tolerance: float, same_machine: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"quantity": name, "baseline": base, "new": new, "ratio": None, "verdict": "not judged", "why": ""}
    if base is None or new is None or base <= 0:
        out["why"] = "not measured in both"
        return out
    out["ratio"] = new / base
    limit = (1 - tolerance) if higher_is_better else (1 + tolerance)
    out["limit"] = limit
    if not same_machine:
        out["why"] = "the baseline comes from another machine class"
    elif base_seconds is not None and new_seconds is not None and min(base_seconds, new_seconds) < MIN_TIMED_SECONDS[name]:
        out["why"] = f"timed for under {MIN_TIMED_SECONDS[name]} s"
    else:
        bad = out["ratio"] < limit if higher_is_better else out["ratio"] > limit
        out["verdict"] = "regression" if bad else "ok"
    return out


def compare(baseline: Baseline, new: dict[str, Entry], thresholds: Thresholds, failed: dict[str, str] | None = None,
            here: dict[str, Any] | None = None) -> dict[str, Any]:
    """The per-algorithm comparison and the overall verdict (the JSON summary)."""
    rows = []
    for algorithm in sorted({*new, *(failed or {})}):
        row: dict[str, Any] = {"algorithm": algorithm}
        if failed and algorithm in failed:
            row.update(verdict="regression", why=f"the run failed: {failed[algorithm]}")
            rows.append(row)
            continue
        entry = new[algorithm]
        base = baseline.entries.get(algorithm)
        if base is None:
            row.update(verdict="not judged", why="no baseline for this algorithm")
            rows.append(row)
            continue
        if (base.protocol_hash, base.suite_version) != (entry.protocol_hash, entry.suite_version):
            raise BenchError(f"{algorithm}: the new records have suite version {entry.suite_version}, protocol "
                             f"{entry.protocol_hash}, the baseline {base.suite_version}, {base.protocol_hash}: not comparable; "
                             "drop the suite --set overrides or write a new baseline with `python -m bench baseline`")
        if base.test_sha256 is None or base.test_sha256 != entry.test_sha256 or len(base.per_task) != len(entry.per_task):
            raise BenchError(f"{algorithm}: the new records were tested on other episodes than the baseline "
                             f"({entry.test_sha256} vs {base.test_sha256}); a paired comparison is impossible")
        theirs, ours = base.test_contents_sha256, entry.test_contents_sha256
        if theirs is not None and ours is not None and theirs != ours:
            raise BenchError(f"{algorithm}: the new records drew the baseline's test episodes but read other contents "
                             f"({ours[:12]} vs {theirs[:12]}): the data, its "
                             "decoding or its preprocessing differ from the baseline's; run on the same data copy "
                             "(`python -m bench cache clear` rebuilds the caches) or write a new baseline")
        same_machine = base.machine_class is not None and base.machine_class == (here or entry.machine_class)
        row["metric"] = compare_metric(base, entry, thresholds)
        row["throughput"] = [
            compare_ratio("meta-train tasks/s", base.meta_train_tasks_per_s, entry.meta_train_tasks_per_s,
                          base.meta_train_seconds, entry.meta_train_seconds, True, thresholds.speed_tolerance, same_machine),
            compare_ratio("test episodes/s", base.test_tasks_per_s, entry.test_tasks_per_s,
                          base.test_seconds, entry.test_seconds, True, thresholds.speed_tolerance, same_machine),
        ]
        row["memory"] = compare_ratio("peak memory MB", base.peak_mem_mb, entry.peak_mem_mb, None, None, False,
                                      thresholds.memory_tolerance, same_machine)
        row["hyperparameters_changed"] = _differences(base, entry)
        # The test episodes are the same for every training seed, so the comparison stands; but a
        # different seed is a different experiment, and the reader must be told.
        row["seeds"] = {"baseline": sorted(base.seeds), "new": sorted(entry.seeds)}
        row["task_chunk"] = [base.task_chunk, entry.task_chunk]
        row["records"] = entry.records
        verdicts = [row["metric"]["verdict"], *(t["verdict"] for t in row["throughput"]), row["memory"]["verdict"]]
        row["verdict"] = "regression" if "regression" in verdicts else "ok"
        rows.append(row)
    regressions = [r["algorithm"] for r in rows if r["verdict"] == "regression"]
    return {
        "suite": baseline.suite, "tier": baseline.tier, "baseline": baseline.source,
        "baseline_machine_class": _only(e.machine_class for e in baseline.entries.values()),
        "machine_class": here, "thresholds": asdict(thresholds),
        "test": "one-sided paired t-test on the per-episode test metric (identical episodes) plus a minimum effect size",
        "rows": rows, "regressions": regressions, "passed": not regressions,
    }


def faster(first: Entry, second: Entry) -> Entry:
    """``first`` with each throughput (and its timed seconds) replaced by ``second``'s where that is higher."""
    changes: dict[str, Any] = {}
    for rate, seconds in (("meta_train_tasks_per_s", "meta_train_seconds"), ("test_tasks_per_s", "test_seconds")):
        if (getattr(second, rate) or 0.0) > (getattr(first, rate) or 0.0):
            changes.update({rate: getattr(second, rate), seconds: getattr(second, seconds)})
    return replace(first, **changes, records=[*first.records, *second.records])


def slow_algorithms(summary: dict[str, Any]) -> list[str]:
    """The algorithms the summary calls a throughput regression."""
    return [row["algorithm"] for row in summary["rows"]
            if any(item["verdict"] == "regression" for item in row.get("throughput", []))]


def with_second_timing(summary: dict[str, Any], baseline: Baseline, first: dict[str, Entry],
                       second: dict[str, Entry], thresholds: Thresholds, failed: dict[str, str],
                       here: dict[str, Any] | None) -> dict[str, Any]:
    """The comparison again with the faster of two timings for the algorithms timed twice; each such
    row keeps both timings' ratios under ``retimed`` and says whether the reruns' values were identical."""
    merged = {a: faster(e, second[a]) if a in second else e for a, e in first.items()}
    again = compare(baseline, merged, thresholds, failed, here)
    before = {row["algorithm"]: row for row in summary["rows"]}
    timed = {row["algorithm"]: row for row in compare(baseline, second, thresholds, None, here)["rows"]}
    for row in again["rows"]:
        name = row["algorithm"]
        if name in second:
            row["retimed"] = {
                "ratios": [[a["ratio"], b["ratio"]] for a, b in zip(before[name]["throughput"], timed[name]["throughput"],
                                                                     strict=True)],
                "identical_values": second[name].per_task == first[name].per_task,
                "records": second[name].records,
            }
    return again


def _only(values: Any) -> Any:
    values = list(values)
    return values[0] if values and all(v == values[0] for v in values) else None


def render_markdown(summary: dict[str, Any]) -> str:
    verdict = "PASSED" if summary["passed"] else f"FAILED: regression in {', '.join(summary['regressions'])}"
    t = summary["thresholds"]
    lines = [
        f"### bench check {summary['suite']} ({summary['tier']} tier): {verdict}",
        "",
        f"Baseline: `{summary['baseline']}`. Metric: {summary['test']} (alpha {t['alpha']}); throughput judged below "
        f"{1 - t['speed_tolerance']:.2g}x the baseline, peak memory above {1 + t['memory_tolerance']:.2g}x, "
        "only on the same machine class.",
        "",
        "| algorithm | verdict | metric: baseline -> new | change (better +) | min effect | p (worse) | "
        "meta-train tasks/s ratio | "
        "test episodes/s ratio | memory ratio | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        if "metric" not in row:
            lines.append(f"| {row['algorithm']} | {row['verdict']} | | | | | | | | {row['why']} |")
            continue
        m = row["metric"]
        ratios = []
        for item in [*row["throughput"], row["memory"]]:
            text = f"{item['ratio']:.2f}" if item["ratio"] is not None else "-"
            ratios.append(text + (f" ({item['verdict']})" if item["verdict"] == "regression" else
                                  "" if item["verdict"] == "ok" else f" (not judged: {item['why']})"))
        notes = []
        if "retimed" in row:
            timings = "; ".join(f"{name} {' then '.join('-' if r is None else f'{r:.2f}' for r in pair)}"
                                for name, pair in zip(("meta-train", "test"), row["retimed"]["ratios"], strict=True))
            notes.append(f"timed twice, the faster judged ({timings})")
            if not row["retimed"]["identical_values"]:
                notes.append("the second run's per-episode values differ from the first's")
        if m["identical_episodes_values"]:
            notes.append("identical per-episode values")
        if row["hyperparameters_changed"]:
            changed = row["hyperparameters_changed"].items()
            notes.append("hyperparameters differ: " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in changed))
        if row["seeds"]["baseline"] != row["seeds"]["new"]:
            notes.append(f"training seeds differ: baseline {','.join(map(str, row['seeds']['baseline']))}, "
                         f"new {','.join(map(str, row['seeds']['new']))}")
        lines.append(
            f"| {row['algorithm']} | **{row['verdict']}** | {m['metric']} {significant(m['baseline'], 4)} -> "
            f"{significant(m['new'], 4)} | {m['improvement'] + 0.0:+.3g} | "
            f"{significant(m['min_effect']['in_metric_units'], 3)} | {significant(m['p_worse'], 2)} | "
            + " | ".join(ratios) + f" | {'; '.join(notes)} |")
    return "\n".join(lines) + "\n"


def new_results_dir() -> Path:
    """Where `bench check` keeps the records of its runs when no --results-dir is given."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="bench-check-", dir=os.environ.get("TMPDIR")))


# --- orchestration (the CLI's `check` and `baseline`) ------------------------------------------

def run_check(suite_name: str, baseline_path: Path, tier: str | None = None, algorithms: list[str] | None = None,
              overrides: list[str] | tuple[str, ...] = (), results_dir: Path | None = None, records_dir: Path | None = None,
              device: str = "auto", thresholds: Thresholds = Thresholds(), progress: bool = True,
              executor: Any = None, threads: int | None = None, checkpoint_every: int | None = None,
              retime: bool = True) -> dict[str, Any]:
    """Run the suite (or take ``records_dir``'s records) and compare with the baseline.

    With ``retime``, algorithms whose throughput came out below the limit run once more and the
    faster timing is judged (stored records, ``records_dir``, are judged as they are).

    ``executor`` runs the new runs (default: local); ``threads`` and ``checkpoint_every`` are
    ``ExecutionOptions``'. Throughput is judged only where the machine class (threads included)
    matches the baseline's.

    Everything that can be wrong with the input is checked before any run starts."""
    thresholds.check()
    name = load_suite(suite_name).name  # a suite file's records are filed under its name
    baseline = load_baseline(Path(baseline_path), name, tier)
    tier = baseline.tier
    wanted = algorithms or sorted(baseline.entries)
    if records_dir is not None:
        if overrides:
            raise BenchError("--set changes a run; with --records nothing is run, so drop --set")
        new = entries_from_records(Path(records_dir), name, tier, baseline.protocol_hash, wanted)
        summary = compare(baseline, new, thresholds, here=_only(e.machine_class for e in new.values()))
        summary["new_records"] = str(records_dir)
        return summary
    unknown = [a for a in wanted if a not in baseline.entries]
    if unknown:
        raise BenchError(f"--algorithms: no baseline for {', '.join(unknown)} in {baseline.source} "
                         f"(it has {', '.join(sorted(baseline.entries))})")
    seeds = sorted({seed for a in wanted for seed in baseline.entries[a].seeds})
    chunks = {a: chunk for a in wanted if (chunk := baseline.entries[a].task_chunk) is not None}
    # A baseline entry without its own evaluation chunk evaluated with its task chunk.
    eval_chunks = {a: chunk for a in wanted if (chunk := baseline.entries[a].eval_chunk or baseline.entries[a].task_chunk)}
    parsed = Overrides.parse(overrides)
    protocol_hash = load_suite(suite_name, tier=tier, overrides=parsed.suite, override_texts=parsed.texts).protocol_hash()
    if protocol_hash != baseline.protocol_hash:
        raise BenchError(f"the suite's protocol is now {protocol_hash}, the baseline's {baseline.protocol_hash} "
                         f"({baseline.source}): not comparable; drop suite --set overrides, or if the suite changed on "
                         f"purpose write a new baseline with `python -m bench baseline {name} --tier {tier} --replace`")
    results_dir = results_dir if results_dir is not None else new_results_dir()
    options = ExecutionOptions(task_chunks=chunks, eval_chunks=eval_chunks, threads=threads,
                               checkpoint_every=checkpoint_every)
    plan = plan_run(suite_name, wanted, seeds, tier, results_dir, device, list(overrides), options)
    done = execute(plan, progress=progress, executor=executor)  # checks the executor before any run
    failed = {r["algorithm"]["name"]: f"{r['status']}: {r.get('error', {}).get('message', '')}" for r in done
              if r["status"] != "completed"}
    here = _only(machine_class(r["environment"]) for r in done)  # the runs' (Ray: the workers')
    first = {a: e for a, e in entries_from_run(done).items() if a not in failed}
    summary = compare(baseline, first, thresholds, failed, here=here)
    summary["new_records"] = str(results_dir)
    slow = slow_algorithms(summary)
    if slow and retime:
        # Another directory: in the first one the completed records would be resumed, not rerun.
        again_dir = results_dir.with_name(results_dir.name + "-retimed")
        log.info("throughput below the limit for %s: timing %s once more (records under %s)",
                 ", ".join(slow), "it" if len(slow) == 1 else "them", again_dir)
        again = execute(plan_run(suite_name, slow, seeds, tier, again_dir, device, list(overrides), options),
                        progress=progress, executor=executor)
        second = entries_from_run([r for r in again if r["status"] == "completed"])
        summary = with_second_timing(summary, baseline, first, second, thresholds, failed, here)
        summary["new_records"] = str(results_dir)
        summary["retimed_records"] = str(again_dir)
    return summary


def make_baseline(suite_name: str, tier: str, out: Path | None = None, algorithms: list[str] | None = None,
                  seeds: list[int] | None = None, overrides: list[str] | tuple[str, ...] = (),
                  results_dir: Path = Path("results"), from_records: bool = False, replace: bool = False,
                  device: str = "auto", progress: bool = True) -> tuple[Baseline, Path]:
    """Run the suite into ``results_dir`` (or take its records) and write the baseline file."""
    suite = load_suite(suite_name, tier=tier)
    out = out or Path("results") / "baselines" / f"{suite.name}-{tier}.json"
    if out.exists() and not replace:
        raise BenchError(f"{out} exists; pass --replace to overwrite it deliberately (the old one stays in git history)")
    if from_records:
        if overrides or seeds:
            raise BenchError("--from-records takes the stored records as they are; drop --set and --seeds")
        entries = entries_from_records(results_dir, suite.name, tier, suite.protocol_hash(), algorithms)
    else:
        plan = plan_run(suite_name, algorithms, seeds, tier, results_dir, device, list(overrides))
        done = execute(plan, progress=progress)
        failed = [f"{r['algorithm']['name']} seed {r['seeds']['training_seed']}" for r in done if r["status"] != "completed"]
        if failed:
            raise BenchError(f"not writing a baseline: {', '.join(failed)} did not complete (see their records)")
        entries = entries_from_run(done)
    baseline = Baseline(suite.name, tier, entries, source=str(out), created_at=records.utc_now(), git=git_state(),
                        thresholds=None)
    write_baseline(baseline, out, replace=True)
    return baseline, out
