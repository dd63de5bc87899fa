"""Measuring commands: ``perf`` (our core against learn2learn), ``perf-executors``, ``perf-chunks`` and ``cost``."""

from __future__ import annotations

import argparse
import json

from bench import api
from bench.cli import common
from bench.config import TEXT_ENCODERS
from bench.measure import cost as costs
from bench.measure import perf as perf_core
from bench.measure import perf_chunks, perf_executors


def _perf_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_format(parser)
    common.add_device(parser)
    parser.add_argument("--quick", action="store_true", help="a small configuration (meta-batch 4, Conv-4-16) for a fast check")
    parser.add_argument("--rounds", type=common.positive_int, help="interleaved timing rounds (default 3, quick 1)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements (fresh processes)")
    common.add_results_dir(parser, help="the record goes to RESULTS_DIR/perf/perf-<time>.json (default: results)")
    common.add_no_save(parser)


def _perf(args: argparse.Namespace) -> int:
    record, _ = api.perf(args.device, args.quick, args.rounds, not args.no_memory, args.results_dir, not args.no_save)
    print(json.dumps(record["rows"], indent=1) if args.format == "json" else perf_core.render(record))
    return 0


def _executors_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="sine", help="default: sine")
    common.add_tier(parser, default="smoke")
    common.add_algorithms(parser)
    common.add_seeds(parser, default=[0, 1, 2], help="default: 0,1,2")
    parser.add_argument("--rounds", type=common.positive_int, default=2, help="interleaved rounds (default 2)")
    common.add_results_dir(parser, help="the measurement record goes to RESULTS_DIR/perf/ (the runs themselves to a "
                                        "temporary directory)")
    common.add_no_save(parser)


def _executors(args: argparse.Namespace) -> int:
    record, _ = api.perf_executors(args.suite, args.tier, args.algorithms, args.seeds, args.rounds, args.results_dir,
                                   not args.no_save)
    print(perf_executors.render(record))
    return 0


def _chunks_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", nargs="?", default="sine", help="default: sine")
    common.add_tier(parser, default="standard")
    common.add_algorithms(parser, default=["metasgd", "reptile", "maml"], help="default: metasgd,reptile,maml")
    parser.add_argument("--load", type=common.non_negative_int, default=3, help="CPU-bound background processes (default 3)")
    parser.add_argument("--choices", type=common.positive_int, default=5,
                        help="choices made under load per algorithm (default 5)")
    common.add_results_dir(parser, help="the record goes to RESULTS_DIR/perf/chunks-<time>.json")
    common.add_no_save(parser)


def _chunks(args: argparse.Namespace) -> int:
    record, _ = api.perf_chunks(args.suite, args.tier, tuple(args.algorithms), args.load, args.choices, args.results_dir,
                                not args.no_save)
    print(perf_chunks.render(record))
    return 0 if record["passed"] else 1


def _cost_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suites", nargs="+", help="suite names, or `all`")
    common.add_tier(parser, default="standard")
    parser.add_argument("--encoder", choices=TEXT_ENCODERS, help="text suites: the encoder (default: both)")
    common.add_format(parser)
    common.add_results_dir(parser, help="measured run times are read from here; the record goes to RESULTS_DIR/cost/")
    common.add_no_save(parser)


def _cost(args: argparse.Namespace) -> int:
    results, _ = api.cost(args.suites, args.tier, args.encoder, args.results_dir, not args.no_save)
    print(json.dumps(results, indent=1) if args.format == "json" else costs.render(results))
    return 0


COMMANDS = (
    common.Command("perf", "time our gradient-based core against learn2learn, side by side",
                   "python -m bench perf --quick --no-memory --no-save", _perf_arguments, _perf),
    common.Command("cost", "project a suite tier's wall time on this machine from a few timed steps",
                   "python -m bench cost omniglot-5w1s --tier paper", _cost_arguments, _cost),
    common.Command("perf-executors", "time the Ray executor against the local one on a grid of runs",
                   "python -m bench perf-executors sine --tier smoke --rounds 2", _executors_arguments, _executors),
    common.Command("perf-chunks", "check that the task-chunk choice holds on a loaded machine (run it on a quiet one)",
                   "python -m bench perf-chunks sine --algorithms maml --load 3", _chunks_arguments, _chunks),
)
