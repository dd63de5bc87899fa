"""``python -m bench``: one small module per group of commands, each command a thin call into
``bench.api`` (which notebooks can call too). ``common`` holds what they share: argument types,
the results-dir / device / tier / selection / executor arguments, and the parser class whose
errors are one line with exit code 2. This module assembles the parser and maps the errors of
every command to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from bench.cli import measure, results, run, setup
from bench.cli.common import Command, Parser
from bench.errors import BenchError, RecordNotWritten, describe_os_error, one_line

COMMANDS: tuple[Command, ...] = (*setup.COMMANDS, *run.COMMANDS, *results.COMMANDS, *measure.COMMANDS)
"""In the order ``--help`` lists them: by role."""

EXAMPLES = """examples:
  python -m bench list
  python -m bench run sine --tier smoke
  python -m bench leaderboard sine --format markdown
  python -m bench check sine --baseline results/baselines/sine-ci.json"""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m bench", description="Reproducible meta-learning benchmarks.", epilog=EXAMPLES,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only, no progress bars")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.help,
                                  epilog=f"example:\n  {command.example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(sub)
        sub.set_defaults(handler=command.handler)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", stream=sys.stderr)
    # Schedulers (Slurm, Kubernetes) stop a job with SIGTERM before SIGKILL: treat it as Ctrl-C, so the
    # run in progress is recorded as interrupted and keeps its checkpoint for --resume.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.handler(args)
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


__all__ = ["COMMANDS", "build_parser", "main"]
