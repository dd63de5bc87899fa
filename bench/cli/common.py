"""What the commands share: the parser class, argument types, common arguments and the executor options."""

from __future__ import annotations

import argparse
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from bench.errors import BenchError, one_line
from bench.run.executors import LocalExecutor, RayExecutor


class Parser(argparse.ArgumentParser):
    """argparse with bench's error format: one line (no usage text), exit code 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {one_line(message)} (see {self.prog} --help)\n")


@dataclass(frozen=True)
class Command:
    """One ``python -m bench`` command: its arguments, and the handler that calls ``bench.api``."""

    name: str
    help: str
    example: str  # shown at the end of the command's --help
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


# --- argument types -----------------------------------------------------------------------------

def seeds(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"expected comma-separated distinct integers, got {text!r}")
    return values


def names(text: str) -> list[str]:
    values = [s.strip() for s in text.split(",") if s.strip()]
    if not values or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"expected comma-separated distinct names, got {text!r}")
    return values


def _whole_number(text: str, least: int) -> int:
    wanted = "a positive whole number" if least == 1 else f"a whole number >= {least}"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {wanted}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _bounded_float(text: str, positive: bool) -> float:
    value = _float(text)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"expected a number {'> 0' if positive else '>= 0'}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    return _bounded_float(text, positive=True)


def non_negative_float(text: str) -> float:
    return _bounded_float(text, positive=False)


def finite_float(text: str) -> float:
    value = _float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    return value


# --- arguments several commands take ------------------------------------------------------------

def add_results_dir(parser: argparse.ArgumentParser, help: str | None = None, default: Path | None = Path("results")) -> None:
    parser.add_argument("--results-dir", type=Path, default=default,
                        help=help or "where run records are stored (default: results)")


def add_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def add_tier(parser: argparse.ArgumentParser, default: str | None = None, help: str | None = None) -> None:
    parser.add_argument("--tier", default=default,
                        help=help or ("smoke, standard or paper " + (f"(default: {default})" if default else
                                                                      "(default: the suite's default tier)")))


def add_algorithms(parser: argparse.ArgumentParser, default: list[str] | None = None, help: str | None = None) -> None:
    parser.add_argument("--algorithms", type=names, default=default,
                        help=help or "comma-separated names (default: all that apply)")


def add_seeds(parser: argparse.ArgumentParser, default: list[int] | None = None, help: str | None = None) -> None:
    parser.add_argument("--seeds", type=seeds, default=default,
                        help=help or "comma-separated training seeds (default: the tier's)")


def add_overrides(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=help or "override a hyperparameter (maml.inner_lr=0.01) or suite field "
                                     "(suite.test_tasks=100, suite.model.filters=32)")


def add_format(parser: argparse.ArgumentParser, choices: tuple[str, ...] = ("table", "json")) -> None:
    parser.add_argument("--format", choices=choices, default=choices[0])


def add_no_save(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-save", action="store_true", help="print only; store no record")


# The Ray options are None unless given: a given one without --executor ray is an error, and
# RayExecutor's own signature holds their defaults (shown in the help).
RAY_OPTIONS = ("address", "cpus_per_job", "gpus_per_job", "retries")
RAY_DEFAULTS = {name: inspect.signature(RayExecutor).parameters[name].default for name in RAY_OPTIONS}


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("executor (where the runs execute; results are the same)")
    group.add_argument("--executor", choices=["local", "ray"], default="local",
                       help="local: one run after another in this process (default); ray: each run a Ray task "
                            "(pip install .[ray])")
    group.add_argument("--address", help="ray: the cluster to join (e.g. auto, or ray://HOST:10001); "
                                         "default: start a local Ray instance")
    group.add_argument("--cpus-per-job", type=positive_float, metavar="N",
                       help=f"ray: CPUs each run reserves, and its torch threads (default {RAY_DEFAULTS['cpus_per_job']:g})")
    group.add_argument("--gpus-per-job", type=non_negative_float, metavar="N",
                       help=f"ray: GPUs each run reserves (default {RAY_DEFAULTS['gpus_per_job']:g}; fractions share a GPU)")
    group.add_argument("--retries", type=non_negative_int, metavar="N",
                       help=f"ray: times a run whose worker died is started again (default {RAY_DEFAULTS['retries']})")
    group.add_argument("--checkpoint-every", type=non_negative_int, metavar="N",
                       help="save a run's training state every N meta-iterations (atomically, for --resume and "
                            "retries; default: at every validation; 0: never)")
    group.add_argument("--threads", type=positive_int, metavar="N",
                       help="torch threads of each run (default: torch's own for local, --cpus-per-job for ray)")


def executor_from(args: argparse.Namespace) -> LocalExecutor | RayExecutor:
    given = {name: getattr(args, name) for name in RAY_OPTIONS if getattr(args, name) is not None}
    if args.executor == "ray":
        return RayExecutor(**given)
    if given:
        raise BenchError(f"{', '.join('--' + name.replace('_', '-') for name in given)} only apply with --executor ray")
    return LocalExecutor()


def refuse_directory(*targets: Path | None) -> None:
    """A summary path that is a directory is bad input: refused before any work."""
    for target in targets:
        if target is not None and target.is_dir():
            raise BenchError(f"{target} is a directory; give a file name for the summary")
