"""``python -m bench``: a thin command line over :mod:`bench.api`.

Exit codes: 0 success, 1 a run failed, 2 bad input (nothing was run or changed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

from bench.errors import BenchError, RecordNotWritten, describe_os_error, one_line

log = logging.getLogger("bench")


class _Parser(argparse.ArgumentParser):
    """argparse with bench's error format: one line (no usage text), exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not seeds or len(set(seeds)) < len(seeds):
        raise argparse.ArgumentTypeError(f"expected comma-separated distinct integers, got {text!r}")
    return seeds


def _whole_number(text: str, least: int) -> int:
    wanted = "a positive whole number" if least == 1 else f"a whole number >= {least}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _number(text: str, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"expected a number {'> 0' if positive else '>= 0'}, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, positive=True)


def _non_negative_float(text: str) -> float:
    return _number(text, positive=False)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names or len(set(names)) < len(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated distinct names, got {text!r}")
    return names


def _add_executor_arguments(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("executor (where the runs execute; results are the same)")
    group.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: one run after another in this process (default); ray: each run a Ray task "
                            "(pip install .[ray])")
    group.add_argument("--address", help="ray: the cluster to join (e.g. auto, or ray://HOST:10001); "
                                         "default: start a local Ray instance")
    group.add_argument("--cpus-per-job", type=_positive_float, default=1.0, metavar="N",
                       help="ray: CPUs each run reserves, and its torch threads (default 1)")
    group.add_argument("--gpus-per-job", type=_non_negative_float, default=0.0, metavar="N",
                       help="ray: GPUs each run reserves (default 0; fractions share a GPU)")
    group.add_argument("--retries", type=_non_negative_int, default=2, metavar="N",
                       help="ray: times a run whose worker died is started again (default 2)")
    group.add_argument("--checkpoint-every", type=_non_negative_int, metavar="N",
                       help="save a run's training state every N meta-iterations (atomically, for --resume and "
                            "retries; default: at every validation; 0: never)")
    group.add_argument("--threads", type=_positive_int, metavar="N",
                       help="torch threads of each run (default: torch's own for local, --cpus-per-job for ray)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m bench", description="Reproducible meta-learning benchmarks.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    listing = commands.add_parser("list", help="list suites (with tiers) and algorithms (with task types)")
    listing.add_argument("--format", choices=["table", "json"], default="table")

    validate = commands.add_parser("validate", help="check every suite file at every tier")
    validate.add_argument("suites", nargs="*", help="suite names (default: all)")

    run = commands.add_parser("run", help="run algorithms on a suite and print its leaderboard")
    run.add_argument("suite", help="suite name (see `list`) or path to a suite file")
    run.add_argument("--algorithms", type=_names, help="comma-separated names (default: all that apply)")
    run.add_argument("--seeds", type=_seeds, help="comma-separated training seeds (default: the tier's)")
    run.add_argument("--tier", help="smoke, standard or paper (default: the suite's default tier)")
    run.add_argument("--results-dir", type=Path, default=Path("results"))
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a hyperparameter (maml.inner_lr=0.01) or suite field (suite.test_tasks=100, "
                          "suite.model.filters=32)")
    run.add_argument("--encoder", choices=["minilm", "wordcnn"],
                     help="text suites: the frozen sentence encoder (minilm) or a word-CNN trained from scratch (wordcnn); "
                          "the same as --set suite.model.encoder=NAME")
    speed = run.add_argument_group("execution (speed and memory; recorded under `execution`, the protocol is unchanged)")
    speed.add_argument("--task-chunk", type=_positive_int, metavar="N",
                       help="gradient-based methods: adapt N tasks of a meta-batch together (1 = per-task loop); "
                            "default: the fastest size, measured once per device and configuration and cached")
    speed.add_argument("--eval-chunk", type=_positive_int, metavar="N",
                       help="gradient-based methods: adapt N test episodes together (1 = per-episode loop); "
                            "default: measured and cached as for --task-chunk where the plan adapts enough episodes "
                            "to pay for it, else the task chunk")
    speed.add_argument("--checkpoint-inner-steps", action="store_true",
                       help="second-order methods: recompute each inner step in the backward pass instead of keeping "
                            "its graph (memory no longer grows with the steps; about one more forward pass of time)")
    speed.add_argument("--autocast", choices=["bf16"], help="run meta-training and evaluation under bfloat16 autocast")
    speed.add_argument("--compile", action="store_true",
                       help="torch.compile the backbone's forward (first-order and non-gradient methods only)")
    run.add_argument("--dry-run", action="store_true",
                     help="check everything and print the planned runs; run nothing, write nothing")
    _add_executor_arguments(run)
    run.add_argument("--resume", action="store_true",
                     help="skip runs already finished in --results-dir, continue interrupted ones from their last "
                          "checkpoint, run the rest")

    perf = commands.add_parser("perf", help="time our gradient-based core against learn2learn, side by side")
    perf.add_argument("--format", choices=["table", "json"], default="table")
    perf.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    perf.add_argument("--quick", action="store_true", help="a small configuration (meta-batch 4, Conv-4-16) for a fast check")
    perf.add_argument("--rounds", type=_positive_int, help="interleaved timing rounds (default 3, quick 1)")
    perf.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements (fresh processes)")
    perf.add_argument("--results-dir", type=Path, default=Path("results"),
                      help="the record goes to RESULTS_DIR/perf/perf-<time>.json (default: results)")
    perf.add_argument("--no-save", action="store_true", help="print only; store no record")

    cost = commands.add_parser("cost", help="project a suite tier's wall time on this machine from a few timed steps")
    cost.add_argument("suites", nargs="+", help="suite names, or `all`")
    cost.add_argument("--tier", default="standard")
    cost.add_argument("--encoder", choices=["minilm", "wordcnn"], help="text suites: the encoder (default: both)")
    cost.add_argument("--format", choices=["table", "json"], default="table")
    cost.add_argument("--results-dir", type=Path, default=Path("results"),
                      help="measured run times are read from here; the record goes to RESULTS_DIR/cost/")
    cost.add_argument("--no-save", action="store_true", help="print only; store no record")

    board = commands.add_parser("leaderboard", help="print a suite's leaderboard from stored records")
    board.add_argument("suite")
    board.add_argument("--results-dir", type=Path, default=Path("results"))
    board.add_argument("--tier", help="only this tier")
    board.add_argument("--format", choices=["table", "json", "csv", "markdown"], default="table")
    overhead = commands.add_parser("perf-executors", help="time the Ray executor against the local one on a grid of runs")
    overhead.add_argument("suite", nargs="?", default="sine", help="default: sine")
    overhead.add_argument("--tier", default="smoke")
    overhead.add_argument("--algorithms", type=_names, help="comma-separated names (default: all that apply)")
    overhead.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="default: 0,1,2")
    overhead.add_argument("--rounds", type=_positive_int, default=2, help="interleaved rounds (default 2)")
    overhead.add_argument("--results-dir", type=Path, default=Path("results"),
                          help="the measurement record goes to RESULTS_DIR/perf/ (the runs themselves to a temporary directory)")
    overhead.add_argument("--no-save", action="store_true", help="print only; store no record")

    chunks = commands.add_parser("perf-chunks", help="check that the task-chunk choice holds on a loaded machine "
                                                     "(run it on a quiet one)")
    chunks.add_argument("suite", nargs="?", default="sine", help="default: sine")
    chunks.add_argument("--tier", default="standard")
    chunks.add_argument("--algorithms", type=_names, default=["metasgd", "reptile", "maml"],
                        help="default: metasgd,reptile,maml")
    chunks.add_argument("--load", type=_non_negative_int, default=3, help="CPU-bound background processes (default 3)")
    chunks.add_argument("--choices", type=_positive_int, default=5, help="choices made under load per algorithm (default 5)")
    chunks.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="the record goes to RESULTS_DIR/perf/chunks-<time>.json")
    chunks.add_argument("--no-save", action="store_true", help="print only; store no record")

    cache = commands.add_parser("cache", help="show or clear $BENCH_CACHE_DIR (task-chunk choices, prepared data)")
    cache.add_argument("action", choices=["show", "clear"])
    cache.add_argument("what", nargs="?", choices=["task-chunk", "data", "all"], default="task-chunk",
                       help="clear: the task-chunk choices (default), the prepared data files, or both")

    report = commands.add_parser("report", help="write tables (Markdown, LaTeX, CSV), figures (PDF, PNG) and an HTML page")
    report.add_argument("suites", nargs="*", help="suite names (default: every suite with records)")
    report.add_argument("--results-dir", type=Path, default=Path("results"))
    report.add_argument("--out", type=Path, default=Path("report"), help="output directory (default: report/)")

    again = commands.add_parser("reproduce", help="rerun what records say and compare per-episode results with them")
    again.add_argument("records", nargs="+", type=Path, help="completed run records (results/SUITE/TIER/*.json)")
    again.add_argument("--results-dir", type=Path,
                       help="where the reruns' records go (default: a new temporary directory, named in the summary)")
    again.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON summary here")

    check = commands.add_parser("check", help="compare a suite's results with a baseline; exit 1 on a regression")
    check.add_argument("suite", help="suite name or path to a suite file")
    check.add_argument("--baseline", type=Path, required=True,
                       help="a baseline file (results/baselines/SUITE-TIER.json) or a directory of records")
    check.add_argument("--tier", help="the baseline's tier (default: the one the baseline file records)")
    check.add_argument("--algorithms", type=_names, help="comma-separated names (default: every algorithm of the baseline)")
    check.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a hyperparameter for the new runs, as in `run` (e.g. maml.inner_lr=0)")
    check.add_argument("--records", type=Path, metavar="DIR",
                       help="compare the records stored under DIR instead of running the suite")
    check.add_argument("--results-dir", type=Path,
                       help="where the new runs' records go (default: a new temporary directory, named in the summary)")
    check.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    check.add_argument("--alpha", type=_finite_float, default=0.05, help="level of the one-sided paired test (default 0.05)")
    check.add_argument("--min-effect", type=_finite_float,
                       help="smallest change that counts: accuracy points (default 2) or, for MSE, a share of the "
                            "baseline (default 0.10)")
    check.add_argument("--speed-tolerance", type=_finite_float, default=0.5,
                       help="a throughput below (1 - T) x the baseline's is a regression (default 0.5)")
    check.add_argument("--memory-tolerance", type=_finite_float, default=0.5,
                       help="a peak memory above (1 + T) x the baseline's is a regression (default 0.5)")
    _add_executor_arguments(check)
    check.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON summary here")
    check.add_argument("--markdown", type=Path, metavar="FILE",
                       help="also write the Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")

    baseline = commands.add_parser("baseline", help="run a suite tier and write its baseline for `bench check`")
    baseline.add_argument("suite")
    baseline.add_argument("--tier", default="smoke")
    baseline.add_argument("--algorithms", type=_names, help="comma-separated names (default: all that apply)")
    baseline.add_argument("--seeds", type=_seeds, help="comma-separated training seeds (default: the tier's)")
    baseline.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    baseline.add_argument("--results-dir", type=Path, default=Path("results"), help="the runs' records are kept here")
    baseline.add_argument("--from-records", action="store_true", help="build it from the newest stored records; run nothing")
    baseline.add_argument("--out", type=Path, help="default: results/baselines/SUITE-TIER.json")
    baseline.add_argument("--replace", action="store_true", help="overwrite an existing baseline file")
    baseline.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")

    fetch = commands.add_parser("download", help="download a dataset's official archives, checking their checksums")
    fetch.add_argument("dataset", help="omniglot, tiny-imagenet or text")
    fetch.add_argument("--data-dir", type=Path, help="where to put them (default: $BENCH_DATA_DIR or ~/.cache/bench/data)")
    fetch.add_argument("--force", action="store_true", help="download again even if the files exist")
    return parser


def _download(args: argparse.Namespace) -> int:
    from bench.download import download

    for path in download(args.dataset, args.data_dir, args.force):
        print(path)
    return 0


def _list(args: argparse.Namespace) -> int:
    from bench import api

    suites, algorithms = api.list_suites(), api.list_algorithms()
    if args.format == "json":
        print(json.dumps({"suites": suites, "algorithms": algorithms}, indent=1))
        return 0
    name_width = max(len(item["name"]) for item in (*suites, *algorithms))
    family_width = max(len(a["family"]) for a in algorithms)
    print("Suites:")
    for s in suites:
        tiers = ", ".join(s["tiers"])
        print(f"  {s['name']:<{name_width}}  {s['task_type']:<{family_width}}  tiers: {tiers}  {s['description']}")
    print("Algorithms:")
    types_width = max(len(", ".join(a["task_types"])) for a in algorithms)
    for a in algorithms:
        types = ", ".join(a["task_types"])
        print(f"  {a['name']:<{name_width}}  {a['family']:<{family_width}}  {types:<{types_width}}  {a['summary']}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from bench import api
    from bench.config import available_suites

    without_data: list[str] = []
    errors = api.validate_suites(args.suites or None, without_data)
    for error in errors:
        print(f"error: {one_line(error)}", file=sys.stderr)
    if not errors:
        unchecked = f"; data not found, so splits not checked against ways and shots: {', '.join(without_data)}"
        print(f"ok: {len(args.suites or available_suites())} suite file(s) valid at every tier"
              f"{unchecked if without_data else ''}")
    return 2 if errors else 0


def _run(args: argparse.Namespace) -> int:
    from bench import leaderboard
    from bench.execution import ExecutionOptions
    from bench.runner import execute, plan_run

    overrides = [*args.overrides, *([f"suite.model.encoder={args.encoder}"] if args.encoder else [])]
    execution = ExecutionOptions(task_chunk=args.task_chunk, eval_chunk=args.eval_chunk,
                                 checkpoint_inner_steps=args.checkpoint_inner_steps,
                                 autocast=args.autocast, compile=args.compile, threads=args.threads,
                                 checkpoint_every=args.checkpoint_every)
    executor = _executor(args)
    plan = plan_run(args.suite, args.algorithms, args.seeds, args.tier, args.results_dir, args.device, overrides,
                    execution, dry_run=args.dry_run, executor=executor)
    log.info("%d run(s) of suite %s (%s tier) on %s; records go to %s", len(plan.runs), plan.suite.name,
             plan.suite.tier, plan.device, plan.results_dir / plan.suite.name / str(plan.suite.tier))
    if args.dry_run:
        for run in plan.runs:
            print(f"{plan.suite.name} ({plan.suite.tier} tier): {run.algorithm.name} seed {run.seed}")
        for name, why in plan.skipped.items():
            print(f"not run: {name}: {why}")
        return 0
    results = execute(plan, progress=not args.quiet, executor=executor, resume=args.resume)
    failed = [r for r in results if r["status"] != "completed"]
    if len(failed) < len(results):
        print(leaderboard.render(leaderboard.leaderboards(args.results_dir, plan.suite.name, plan.suite.tier)))
    for record in failed:
        error = record["error"]
        what = error["message"] if record["status"] == "diverged" else f"{error['type']}: {error['message']}"
        print(f"error: {record['algorithm']['name']} seed {record['seeds']['training_seed']} {record['status']}: "
              f"{one_line(what)} (record: {record['_path']})", file=sys.stderr)
    return 1 if failed else 0


def _executor(args: argparse.Namespace):
    from bench.executors import LocalExecutor, RayExecutor

    if args.executor == "ray":
        return RayExecutor(args.address, args.cpus_per_job, args.gpus_per_job, args.retries)
    ray_only = [flag for flag, given in (("--address", args.address is not None), ("--cpus-per-job", args.cpus_per_job != 1.0),
                                         ("--gpus-per-job", args.gpus_per_job != 0.0), ("--retries", args.retries != 2)) if given]
    if ray_only:
        raise BenchError(f"{', '.join(ray_only)} only apply with --executor ray")
    return LocalExecutor()


def _perf(args: argparse.Namespace) -> int:
    from bench import perf
    from bench.environment import resolve_device
    from bench.records import check_writable

    device = resolve_device(args.device)
    if not args.no_save:
        check_writable(args.results_dir)
    record = perf.run_perf(device, quick=args.quick, rounds=args.rounds, memory=not args.no_memory)
    if not args.no_save:
        path = args.results_dir / "perf" / f"perf-{record['created_at'].replace(':', '')}.json"
        perf.save(record, path)
        log.info("perf record: %s", path)
    print(json.dumps(record["rows"], indent=1) if args.format == "json" else perf.render(record))
    return 0


def _perf_executors(args: argparse.Namespace) -> int:
    from bench import perf_executors
    from bench.executors import import_ray
    from bench.records import check_writable
    from bench.runner import plan_run

    import_ray()
    with tempfile.TemporaryDirectory() as scratch:  # bad input fails here, before any timing
        plan_run(args.suite, args.algorithms, args.seeds, args.tier, scratch, "cpu")
    if not args.no_save:
        check_writable(args.results_dir)
    record = perf_executors.measure(args.suite, args.tier, args.algorithms, args.seeds, args.rounds)
    if not args.no_save:
        path = args.results_dir / "perf" / f"executors-{record['created_at'].replace(':', '')}.json"
        perf_executors.save(record, path)
        log.info("record: %s", path)
    print(perf_executors.render(record))
    return 0


def _perf_chunks(args: argparse.Namespace) -> int:
    from bench import perf_chunks
    from bench.records import check_writable
    from bench.runner import plan_run

    with tempfile.TemporaryDirectory() as scratch:  # bad input fails here, before any timing
        plan_run(args.suite, args.algorithms, [0], args.tier, scratch, "cpu")
    if not args.no_save:
        check_writable(args.results_dir)
    record = perf_chunks.measure(args.suite, args.tier, tuple(args.algorithms), args.load, args.choices)
    if not args.no_save:
        path = args.results_dir / "perf" / f"chunks-{record['created_at'].replace(':', '')}.json"
        perf_chunks.save(record, path)
        log.info("record: %s", path)
    print(perf_chunks.render(record))
    return 0 if record["passed"] else 1


def _cache(args: argparse.Namespace) -> int:
    from bench.cache import clear, describe

    if args.action == "show":
        print(describe())
        return 0
    for line in clear(args.what):
        print(line)
    return 0


def _cost(args: argparse.Namespace) -> int:
    import torch

    from bench import cost
    from bench.config import available_suites, load_suite
    from bench.environment import environment
    from bench.records import check_writable, utc_now, write_atomic

    names = available_suites() if args.suites == ["all"] else args.suites
    for name in names:
        load_suite(name, tier=args.tier)  # every name and tier is checked before any timing
    if not args.no_save:
        check_writable(args.results_dir)
    results: list[dict] = []
    created_at = utc_now()
    path = args.results_dir / "cost" / f"cost-{args.tier}-{created_at.replace(':', '')}.json"

    def store() -> None:  # after every suite, so an interrupted `cost all` keeps what it measured
        if not args.no_save:
            record = {"created_at": created_at, "environment": environment(torch.device("cpu")), "suites": results}
            write_atomic(path, json.dumps(record, indent=1) + "\n")

    for name in names:
        suite = load_suite(name, tier=args.tier)
        if suite.task_type == "classification":
            from bench.datasets import check_available

            try:
                check_available(suite)
            except BenchError as exc:
                log.warning("%s: not measured: %s", name, str(exc).splitlines()[0])
                results.append({"suite": name, "tier": args.tier, "encoder": None, "not_measured": str(exc).splitlines()[0]})
                store()
                continue
        encoders = [args.encoder] if args.encoder else (["minilm", "wordcnn"] if suite.model.kind == "text" else [None])
        for encoder in encoders:
            log.info("%s (%s tier%s)", name, args.tier, f", {encoder}" if encoder else "")
            results.append(cost.suite_cost(name, args.tier, encoder, results_dir=args.results_dir, progress=log.info))
            store()
    print(json.dumps(results, indent=1) if args.format == "json" else cost.render(results))
    return 0


def _leaderboard(args: argparse.Namespace) -> int:
    from bench import leaderboard

    print(leaderboard.render(leaderboard.leaderboards(args.results_dir, _suite_name(args.suite), args.tier), args.format))
    return 0


def _suite_name(name_or_path: str) -> str:
    """The name records are filed under: a suite file's (outside suites/ too) ``name``, else the name given."""
    if Path(name_or_path).suffix in (".yaml", ".yml"):
        from bench.config import load_suite

        return load_suite(name_or_path).name
    return name_or_path


def _report(args: argparse.Namespace) -> int:
    from bench.report import build_report

    written = build_report(args.results_dir, args.out, [_suite_name(s) for s in args.suites] or None)
    log.info("%d files written under %s", len(written), args.out)
    print(args.out / "index.html")
    return 0


def _check(args: argparse.Namespace) -> int:
    from bench import check
    from bench.records import write_atomic

    thresholds = check.Thresholds(alpha=args.alpha, min_effect=args.min_effect, speed_tolerance=args.speed_tolerance,
                                  memory_tolerance=args.memory_tolerance)
    for target in (args.json, args.markdown):  # an unwritable summary path is bad input: refuse before running
        if target is not None and target.is_dir():
            raise BenchError(f"{target} is a directory; give a file name for the summary")
    executor = _executor(args)
    if args.records is not None and args.executor != "local":
        raise BenchError("--records compares stored records and runs nothing; drop --executor")
    summary = check.run_check(args.suite, args.baseline, args.tier, args.algorithms, args.overrides, args.results_dir,
                              args.records, args.device, thresholds, progress=not args.quiet, executor=executor,
                              threads=args.threads, checkpoint_every=args.checkpoint_every)
    markdown = check.render_markdown(summary)
    print(markdown)
    if args.json:
        write_atomic(args.json, json.dumps(summary, indent=1) + "\n")
    if args.markdown:
        write_atomic(args.markdown, markdown)
    return 0 if summary["passed"] else 1


def _reproduce(args: argparse.Namespace) -> int:
    from bench import reproduce
    from bench.records import write_atomic

    if args.json is not None and args.json.is_dir():
        raise BenchError(f"{args.json} is a directory; give a file name for the summary")
    summary = reproduce.reproduce(args.records, args.results_dir, progress=not args.quiet)
    print(reproduce.render(summary))
    if args.json:
        write_atomic(args.json, json.dumps(summary, indent=1) + "\n")
    return 0 if summary["all_identical"] else 1


def _baseline(args: argparse.Namespace) -> int:
    from bench import check

    baseline, path = check.make_baseline(args.suite, args.tier, args.out, args.algorithms, args.seeds, args.overrides,
                                         args.results_dir, args.from_records, args.replace, args.device, not args.quiet)
    print(f"baseline of {baseline.suite} ({baseline.tier} tier, {len(baseline.entries)} algorithms) written to {path}")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    handlers = {"list": _list, "validate": _validate, "run": _run, "perf": _perf, "perf-executors": _perf_executors,
                "perf-chunks": _perf_chunks, "cache": _cache,
                "cost": _cost, "leaderboard": _leaderboard,
                "report": _report, "check": _check, "baseline": _baseline,
                "reproduce": _reproduce, "download": _download}
    # Schedulers (Slurm, Kubernetes) stop a job with SIGTERM before SIGKILL: treat it as Ctrl-C, so the
    # run in progress is recorded as interrupted and keeps its checkpoint for --resume.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return handlers[args.command](args)
    except BenchError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except RecordNotWritten as exc:  # a finished result that is kept elsewhere: the message says where
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader stopped early (`bench leaderboard ... | head`): stop quietly, as Unix tools do,
        # and point stdout at /dev/null so that the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except OSError as exc:  # the file system refused something the checks before the work could not foresee
        print(f"error: {one_line(describe_os_error(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished records are kept; the run in progress is recorded as interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
