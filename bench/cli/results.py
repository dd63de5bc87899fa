"""Commands over stored records: ``leaderboard``, ``report``, ``check``, ``baseline`` and ``reproduce``."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from bench import api
from bench.cli import common
from bench.errors import BenchError
from bench.records import write_atomic
from bench.results.check import Thresholds, render_markdown
from bench.results.reproduce import render as render_reproduction

log = logging.getLogger("bench")


def _leaderboard_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite")
    common.add_results_dir(parser)
    parser.add_argument("--tier", help="only this tier")
    common.add_format(parser, ("table", "json", "csv", "markdown"))


def _leaderboard(args: argparse.Namespace) -> int:
    print(api.render_leaderboard(api.leaderboard(args.suite, args.results_dir, args.tier), args.format))
    return 0


def _report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suites", nargs="*", help="suite names (default: every suite with records)")
    common.add_results_dir(parser)
    parser.add_argument("--out", type=Path, default=Path("report"), help="output directory (default: report/)")


def _report(args: argparse.Namespace) -> int:
    written = api.report(args.results_dir, args.out, args.suites or None)
    log.info("%d files written under %s", len(written), args.out)
    print(args.out / "index.html")
    return 0


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", help="suite name or path to a suite file")
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a baseline file (results/baselines/SUITE-TIER.json) or a directory of records")
    common.add_tier(parser, help="the baseline's tier (default: the one the baseline file records)")
    common.add_algorithms(parser, help="comma-separated names (default: every algorithm of the baseline)")
    common.add_overrides(parser, help="override a hyperparameter for the new runs, as in `run` (e.g. maml.inner_lr=0)")
    parser.add_argument("--records", type=Path, metavar="DIR",
                        help="compare the records stored under DIR instead of running the suite")
    common.add_results_dir(parser, default=None, help="where the new runs' records go (default: a new temporary "
                                                      "directory, named in the summary)")
    common.add_device(parser)
    parser.add_argument("--alpha", type=common.finite_float, default=0.05,
                        help="level of the one-sided paired test (default 0.05)")
    parser.add_argument("--min-effect", type=common.finite_float,
                        help="smallest change that counts: accuracy points (default 2) or, for MSE, a share of the "
                             "baseline (default 0.10)")
    parser.add_argument("--speed-tolerance", type=common.finite_float, default=0.5,
                        help="a throughput below (1 - T) x the baseline's is a regression (default 0.5)")
    parser.add_argument("--memory-tolerance", type=common.finite_float, default=0.5,
                        help="a peak memory above (1 + T) x the baseline's is a regression (default 0.5)")
    parser.add_argument("--no-retime", dest="retime", action="store_false",
                        help="call a throughput regression on one timing (default: an algorithm that comes out "
                             "too slow runs once more and the faster timing is judged)")
    common.add_executor_arguments(parser)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON summary here")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)")


def _check(args: argparse.Namespace) -> int:
    thresholds = Thresholds(alpha=args.alpha, min_effect=args.min_effect, speed_tolerance=args.speed_tolerance,
                            memory_tolerance=args.memory_tolerance)
    common.refuse_directory(args.json, args.markdown)
    executor = common.executor_from(args)
    if args.records is not None and args.executor != "local":
        raise BenchError("--records compares stored records and runs nothing; drop --executor")
    summary = api.check(args.suite, args.baseline, args.tier, args.algorithms, args.overrides, args.results_dir,
                        args.records, args.device, thresholds, progress=not args.quiet, executor=executor,
                        threads=args.threads, checkpoint_every=args.checkpoint_every, retime=args.retime)
    markdown = render_markdown(summary)
    print(markdown)
    if args.json:
        write_atomic(args.json, json.dumps(summary, indent=1) + "\n")
    if args.markdown:
        write_atomic(args.markdown, markdown)
    return 0 if summary["passed"] else 1


def _baseline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite")
    common.add_tier(parser, default="smoke")
    common.add_algorithms(parser)
    common.add_seeds(parser)
    common.add_overrides(parser, help="as in `run`")
    common.add_results_dir(parser, help="the runs' records are kept here (default: results)")
    parser.add_argument("--from-records", action="store_true", help="build it from the newest stored records; run nothing")
    parser.add_argument("--out", type=Path, help="default: results/baselines/SUITE-TIER.json")
    parser.add_argument("--replace", action="store_true", help="overwrite an existing baseline file")
    common.add_device(parser)


def _baseline(args: argparse.Namespace) -> int:
    baseline, path = api.baseline(args.suite, args.tier, args.out, args.algorithms, args.seeds, args.overrides,
                                  args.results_dir, args.from_records, args.replace, args.device, not args.quiet)
    print(f"baseline of {baseline.suite} ({baseline.tier} tier, {len(baseline.entries)} algorithms) written to {path}")
    return 0


def _reproduce_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", nargs="+", type=Path, help="completed run records (results/SUITE/TIER/*.json)")
    common.add_results_dir(parser, default=None, help="where the reruns' records go (default: a new temporary "
                                                      "directory, named in the summary)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the JSON summary here")


def _reproduce(args: argparse.Namespace) -> int:
    common.refuse_directory(args.json)
    summary = api.reproduce(args.records, args.results_dir, progress=not args.quiet)
    print(render_reproduction(summary))
    if args.json:
        write_atomic(args.json, json.dumps(summary, indent=1) + "\n")
    return 0 if summary["all_identical"] else 1


COMMANDS = (
    common.Command("leaderboard", "print a suite's leaderboard from stored records",
                   "python -m bench leaderboard sine --tier smoke --format markdown", _leaderboard_arguments, _leaderboard),
    common.Command("report", "write tables (Markdown, LaTeX, CSV), figures (PDF, PNG) and an HTML page",
                   "python -m bench report sine omniglot-5w1s --out report", _report_arguments, _report),
    common.Command("check", "compare a suite's results with a baseline; exit 1 on a regression",
                   "python -m bench check sine --baseline results/baselines/sine-ci.json --algorithms maml",
                   _check_arguments, _check),
    common.Command("baseline", "run a suite tier and write its baseline for `bench check`",
                   "python -m bench baseline sine --tier ci --replace", _baseline_arguments, _baseline),
    common.Command("reproduce", "rerun what records say and compare per-episode results with them",
                   "python -m bench reproduce results/sine/smoke/maml-seed0-*.json", _reproduce_arguments, _reproduce),
)
