"""Commands about the installation itself: ``list``, ``validate``, ``download`` and ``cache``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench import api
from bench.cli import common
from bench.config import available_suites
from bench.datasets import DATA_MODULES
from bench.datasets.download import NOT_DOWNLOADABLE
from bench.errors import one_line


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_format(parser)


def _list(args: argparse.Namespace) -> int:
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


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suites", nargs="*", help="suite names (default: all)")


def _validate(args: argparse.Namespace) -> int:
    without_data: list[str] = []
    errors = api.validate_suites(args.suites or None, without_data)
    for error in errors:
        print(f"error: {one_line(error)}", file=sys.stderr)
    if not errors:
        unchecked = f"; data not found, so splits not checked against ways and shots: {', '.join(without_data)}"
        print(f"ok: {len(args.suites or available_suites())} suite file(s) valid at every tier"
              f"{unchecked if without_data else ''}")
    return 2 if errors else 0


def _download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help=", ".join(d for d in DATA_MODULES if d not in NOT_DOWNLOADABLE))
    parser.add_argument("--data-dir", type=Path, help="where to put them (default: $BENCH_DATA_DIR or ~/.cache/bench/data)")
    parser.add_argument("--force", action="store_true", help="download again even if the files exist")


def _download(args: argparse.Namespace) -> int:
    for path in api.download(args.dataset, args.data_dir, args.force):
        print(path)
    return 0


def _cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show", "clear"])
    parser.add_argument("what", nargs="?", choices=["task-chunk", "data", "all"], default="task-chunk",
                        help="clear: the task-chunk choices (default), the prepared data files, or both")


def _cache(args: argparse.Namespace) -> int:
    for line in api.cache(args.action, args.what):
        print(line)
    return 0


COMMANDS = (
    common.Command("list", "list suites (with tiers) and algorithms (with task types)",
                   "python -m bench list --format json", _list_arguments, _list),
    common.Command("validate", "check every suite file at every tier", "python -m bench validate sine omniglot-5w1s",
                   _validate_arguments, _validate),
    common.Command("download", "download a dataset's official archives, checking their checksums",
                   "python -m bench download omniglot --data-dir ~/data", _download_arguments, _download),
    common.Command("cache", "show or clear $BENCH_CACHE_DIR (task-chunk choices, prepared data)",
                   "python -m bench cache clear task-chunk", _cache_arguments, _cache),
)
