"""The Python API: every ``python -m bench`` command is a thin call into one of these functions,
which a notebook or a script can call too. They take and return plain values (records and
summaries are dicts, as stored), check their input before any work and raise ``BenchError``
with what to do when it is wrong::

    from bench import api

    records = api.run("sine", algorithms=["maml", "cnp"], tier="smoke", seeds=[0])
    for meta, table in api.leaderboard("sine", tier="smoke"):  # one pandas DataFrame per protocol
        print(meta["tier"], meta["metric"], table[["algorithm", "mean", "ci95"]], sep="\\n")
    summary = api.check("sine", "results/baselines/sine-ci.json", algorithms=["maml"])
    assert summary["passed"]
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.algorithms import ALGORITHMS
from bench.config import TEXT_ENCODERS, SplitName, available_suites, load_suite
from bench.datasets import check_available
from bench.datasets.download import download as download_dataset
from bench.datasets.shapes import class_sizes
from bench.errors import BenchError, DataNotFound
from bench.measure import cost as costs
from bench.measure import perf as perf_core
from bench.measure import perf_chunks as chunk_choice
from bench.measure import perf_executors as executor_overhead
from bench.records import check_writable, utc_now, write_atomic
from bench.results import check as checks
from bench.results import leaderboard as leaderboards
from bench.results import reproduce as reruns
from bench.results.report import build_report
from bench.run import evaluation as evaluations
from bench.run import executors
from bench.run.cache import clear, describe
from bench.run.environment import environment, resolve_device
from bench.run.execution import ExecutionOptions
from bench.run.executors import import_ray
from bench.run.runner import Overrides, RunPlan, check_suite_algorithms, check_suite_data, plan_run
from bench.tasks import episode_files

log = logging.getLogger(__name__)


def list_algorithms() -> list[dict[str, Any]]:
    """Every registered algorithm: name, family, task types, one-line summary, module and the search
    space ``bench tune`` uses (field: range or choices)."""
    return [
        {
            "name": name,
            "family": ALGORITHMS.get(name).family,
            "task_types": sorted(ALGORITHMS.get(name).task_types),
            "summary": ALGORITHMS.get(name).summary(),
            "module": ALGORITHMS.get(name).__module__,
            "search_space": {field: search.to_json()
                             for field, search in ALGORITHMS.get(name).Hparams.search_space().items()},
        }
        for name in ALGORITHMS.names()
    ]


def list_suites() -> list[dict[str, Any]]:
    """Every suite under ``suites/``: name, version, task type, protocol, description and tiers."""
    out = []
    for name in available_suites():
        suite = load_suite(name)
        out.append({
            "name": name,
            "version": suite.version,
            "task_type": suite.task_type,
            "protocol": suite.protocol,
            "description": suite.description,
            "tiers": sorted(load_suite(name).tiers),
            "default_tier": suite.default_tier,
        })
    return out


def validate_suites(names: list[str] | None = None, without_data: list[str] | None = None) -> list[str]:
    """Check every suite at every tier as ``run`` would before any work; returns the errors (empty
    when all are valid). Where the suite's data files are present, its splits are checked against
    the episode shapes too; the suites whose data is absent are appended to ``without_data``."""
    errors = []
    counted: dict[str, dict[str, dict[str, int]] | None] = {}  # tiers share their data: count it once
    for name in names or available_suites():
        try:
            for tier in load_suite(name).tiers:
                suite = load_suite(name, tier=tier)
                check_suite_algorithms(suite)
                if suite.task_type == "classification":
                    try:
                        check_available(suite)
                    except DataNotFound:  # absent: reported as unchecked (a damaged file is an error)
                        if without_data is not None and name not in without_data:
                            without_data.append(name)
                        continue
                    data = json.dumps(suite.data.model_dump(mode="json"), sort_keys=True)
                    if data not in counted:
                        counted[data] = class_sizes(suite)
                    check_suite_data(suite, counted[data])
        except BenchError as exc:
            errors.append(str(exc))
    return errors


plan = plan_run
"""Check everything a run needs and return its plan (``plan.runs``: the (algorithm, seed) pairs;
``plan.skipped``: the algorithms left out and why); ``dry_run`` builds no episodes."""


def run(
    suite: str,
    algorithms: list[str] | None = None,
    seeds: list[int] | None = None,
    tier: str | None = None,
    results_dir: Path | str = "results",
    device: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    executor: Any = None,
    resume: bool = False,
    execution: ExecutionOptions | None = None,
    log_to: list[str] | tuple[str, ...] = (),
    save_models: bool = False,
    use_tuned: bool = False,
) -> list[dict[str, Any]]:
    """Run ``algorithms`` (all that apply when None) on ``suite``; returns the run records.

    ``executor``: ``bench.run.executors.LocalExecutor()`` (the default) or ``RayExecutor(address, ...)``;
    ``resume`` skips runs finished in ``results_dir`` and continues interrupted ones;
    ``execution``: how the runs execute (task chunk, autocast, threads, ...), not what they compute;
    ``log_to``: trackers that also get each run's curve and results (``"tensorboard[:DIR]"``, ``"mlflow[:URI]"``);
    ``save_models``: keep each run's selected weights under ``results_dir/models/`` (the record names the file);
    ``use_tuned``: with the hyperparameters ``tune`` wrote for this suite and tier (records marked tuned)."""
    planned = plan(suite, algorithms, seeds, tier, results_dir, device, overrides, execution, executor=executor,
                   log_to=log_to, save_models=save_models, use_tuned=use_tuned)
    return executors.execute(planned, progress=progress, executor=executor, resume=resume)


def tune(suite: str, algorithms: list[str] | None = None, trials: int = 20, tier: str | None = None, seed: int = 0,
         results_dir: Path | str = "results", device: str = "auto", overrides: list[str] | tuple[str, ...] = (),
         resume: bool = False, progress: bool = True, executor: Any = None,
         parallel: int = 1) -> tuple[list[dict[str, Any]], Path]:
    """Tune ``algorithms`` (all that apply and declare a search space, when None) on ``suite``: the same
    number of trials and the same budget each, scored on validation episodes only (bench.run.tuning).
    ``parallel`` trials at a time on a Ray ``executor``. Returns each study's summary and the tuned
    file that ``run(..., use_tuned=True)`` reads."""
    from bench.run import tuning

    return tuning.tune(suite, algorithms, trials, tier, seed, results_dir, device, overrides, resume, progress,
                       executor, parallel)


def execute(planned: RunPlan, progress: bool = True, executor: Any = None, resume: bool = False) -> list[dict[str, Any]]:
    """Run a plan from ``plan``; returns its records in plan order (see ``run``)."""
    return executors.execute(planned, progress=progress, executor=executor, resume=resume)


def export_episodes(suite: str, out: Path | str, split: SplitName = "test", count: int | None = None,
                    tier: str | None = None, overrides: list[str] | tuple[str, ...] = (), force: bool = False) -> Path:
    """Write the first ``count`` (default: the suite's test_tasks) episodes that ``suite`` evaluates on in
    ``split`` to the episode file ``out`` (docs/episode-files.md); a suite with ``test_episodes: FILE``
    then evaluates on exactly these. An existing ``out`` is kept unless ``force``."""
    parsed = Overrides.parse(overrides)
    if parsed.algorithms:
        raise BenchError(f"--set {', '.join(parsed.algorithms)}.*: episodes do not depend on an algorithm; "
                         "give only suite.FIELD=VALUE")
    loaded = load_suite(suite, tier=tier, overrides=parsed.suite, override_texts=parsed.texts)
    path = Path(out)
    if path.exists() and not force:
        raise BenchError(f"{path} exists; give another --out, or --force to replace it")
    check_writable(path.parent, what="output directory", option="--out")
    check_suite_data(loaded)
    content = episode_files.export_episodes(loaded, split, count)
    write_atomic(path, episode_files.dumps(content))
    return path


def evaluate(records: list[Path] | list[str], suite: str, tier: str | None = None, episodes: Path | str | None = None,
             results_dir: Path | str = "results", device: str = "auto", progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate the models that ``records`` saved (``run(..., save_models=True)``) on ``suite``'s test
    episodes (or the episode file ``episodes``); returns the evaluation records, written under
    ``results_dir/evaluations/``. Every record, model file and shape is checked before any evaluation."""
    planned = evaluations.plan_evaluation([Path(p) for p in records], suite, tier,
                                          Path(episodes) if episodes is not None else None, results_dir, device)
    return evaluations.evaluate(planned, progress=progress)


def leaderboard(suite: str, results_dir: Path | str = "results", tier: str | None = None
                ) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """The suite's leaderboards from its stored records: one (description, table) per tier and protocol."""
    return leaderboards.leaderboards(results_dir, suite_name(suite), tier)


def render_leaderboard(tables: list[tuple[dict[str, Any], pd.DataFrame]], fmt: str = "table") -> str:
    """``leaderboard``'s tables as text: ``table`` (aligned), ``markdown``, ``csv`` or ``json``."""
    return leaderboards.render(tables, fmt)


def suite_name(name_or_path: str) -> str:
    """The name records are filed under: a suite file's (outside suites/ too) ``name``, else the name given."""
    return load_suite(name_or_path).name if Path(name_or_path).suffix in (".yaml", ".yml") else name_or_path


def report(results_dir: Path | str = "results", out: Path | str = "report", suites: list[str] | None = None) -> list[Path]:
    """Write tables (Markdown, LaTeX, CSV), figures and ``index.html`` under ``out``; returns the files written."""
    return build_report(Path(results_dir), Path(out), [suite_name(s) for s in suites] if suites else None)


def check(suite: str, baseline: Path | str, tier: str | None = None, algorithms: list[str] | None = None,
          overrides: list[str] | tuple[str, ...] = (), results_dir: Path | None = None, records: Path | None = None,
          device: str = "auto", thresholds: checks.Thresholds | None = None, progress: bool = True,
          executor: Any = None, threads: int | None = None, checkpoint_every: int | None = None,
          retime: bool = True) -> dict[str, Any]:
    """Run the suite again (or take the records under ``records``) and compare with ``baseline``:
    the summary's ``passed`` is False on a regression in the metric, throughput or memory. With
    ``retime`` a throughput regression is called only if a second timing is slow too."""
    return checks.run_check(suite, Path(baseline), tier, algorithms, overrides, results_dir, records, device,
                            thresholds or checks.Thresholds(), progress=progress, executor=executor, threads=threads,
                            checkpoint_every=checkpoint_every, retime=retime)


def baseline(suite: str, tier: str = "smoke", out: Path | None = None, algorithms: list[str] | None = None,
             seeds: list[int] | None = None, overrides: list[str] | tuple[str, ...] = (),
             results_dir: Path = Path("results"), from_records: bool = False, replace: bool = False,
             device: str = "auto", progress: bool = True) -> tuple[checks.Baseline, Path]:
    """Run a suite tier (or take its stored records) and write the baseline file ``check`` compares with."""
    return checks.make_baseline(suite, tier, out, algorithms, seeds, overrides, results_dir, from_records, replace,
                                device, progress)


def reproduce(records: list[Path], results_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Rerun what each record says and compare the per-episode results (``all_identical`` in the summary)."""
    return reruns.reproduce(records, results_dir, progress=progress)


def _save(record: dict[str, Any], results_dir: Path, prefix: str, save: Callable[[dict[str, Any], Path], None]) -> Path:
    path = Path(results_dir) / "perf" / f"{prefix}-{record['created_at'].replace(':', '')}.json"
    save(record, path)
    log.info("record: %s", path)
    return path


def perf(device: str = "auto", quick: bool = False, rounds: int | None = None, memory: bool = True,
         results_dir: Path | str = "results", save: bool = True) -> tuple[dict[str, Any], Path | None]:
    """Time our gradient-based core against learn2learn side by side; the perf record and where it was stored."""
    resolved = resolve_device(device)
    if save:
        check_writable(Path(results_dir))
    record = perf_core.run_perf(resolved, quick=quick, rounds=rounds, memory=memory)
    return record, _save(record, Path(results_dir), "perf", perf_core.save) if save else None


def perf_executors(suite: str = "sine", tier: str = "smoke", algorithms: list[str] | None = None,
                   seeds: list[int] | None = None, rounds: int = 2, results_dir: Path | str = "results",
                   save: bool = True) -> tuple[dict[str, Any], Path | None]:
    """Time the Ray executor against the local one on a grid of runs (Ray must be installed)."""
    import_ray()
    with tempfile.TemporaryDirectory() as scratch:  # bad input fails here, before any timing
        plan(suite, algorithms, seeds, tier, scratch, "cpu")
    if save:
        check_writable(Path(results_dir))
    record = executor_overhead.measure(suite, tier, algorithms, seeds, rounds)
    return record, _save(record, Path(results_dir), "executors", executor_overhead.save) if save else None


def perf_chunks(suite: str = "sine", tier: str = "standard", algorithms: tuple[str, ...] = ("metasgd", "reptile", "maml"),
                load: int = 3, choices: int = 5, results_dir: Path | str = "results",
                save: bool = True) -> tuple[dict[str, Any], Path | None]:
    """Check that the task-chunk choice holds with ``load`` CPU-bound processes beside it (``passed``)."""
    with tempfile.TemporaryDirectory() as scratch:
        plan(suite, list(algorithms), [0], tier, scratch, "cpu")
    if save:
        check_writable(Path(results_dir))
    record = chunk_choice.measure(suite, tier, tuple(algorithms), load, choices)
    return record, _save(record, Path(results_dir), "chunks", chunk_choice.save) if save else None


def cost(suites: list[str], tier: str = "standard", encoder: str | None = None, results_dir: Path | str = "results",
         save: bool = True, progress: Callable[[str], None] = log.info) -> tuple[list[dict[str, Any]], Path | None]:
    """Project each suite tier's wall time on this machine from a few timed steps (``suites``: names,
    or ``["all"]``); suites whose data is missing are reported as not measured. The record is
    rewritten after every suite, so an interrupted ``cost all`` keeps what it measured."""
    names = available_suites() if suites == ["all"] else suites
    for name in names:
        load_suite(name, tier=tier)  # every name and tier is checked before any timing
    results_path = Path(results_dir)
    if save:
        check_writable(results_path)
    results: list[dict[str, Any]] = []
    created_at = utc_now()
    path = results_path / "cost" / f"cost-{tier}-{created_at.replace(':', '')}.json"

    def store() -> None:
        if save:
            record = {"created_at": created_at, "environment": environment(torch.device("cpu")), "suites": results}
            write_atomic(path, json.dumps(record, indent=1) + "\n")

    for name in names:
        suite = load_suite(name, tier=tier)
        if suite.task_type == "classification":
            try:
                check_available(suite)
            except BenchError as exc:
                log.warning("%s: not measured: %s", name, str(exc).splitlines()[0])
                results.append({"suite": name, "tier": tier, "encoder": None, "not_measured": str(exc).splitlines()[0]})
                store()
                continue
        for chosen in [encoder] if encoder else (list(TEXT_ENCODERS) if suite.model.kind == "text" else [None]):
            progress(f"{name} ({tier} tier{f', {chosen}' if chosen else ''})")
            results.append(costs.suite_cost(name, tier, chosen, results_dir=results_path, progress=progress))
            store()
    return results, path if save else None


def download(dataset: str, data_dir: Path | None = None, force: bool = False) -> list[Path]:
    """Fetch a dataset's official archives into the data directory, checking their checksums."""
    return download_dataset(dataset, data_dir, force)


def cache(action: str, what: str = "task-chunk") -> list[str]:
    """``show`` what ``$BENCH_CACHE_DIR`` holds, or ``clear`` the task-chunk choices, the prepared data, or ``all``."""
    return [describe()] if action == "show" else clear(what)
