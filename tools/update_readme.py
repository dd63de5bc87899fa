"""Regenerate the results tables of README.md and the docs pages from the records under results/.

README tables sit between ``<!-- leaderboard:SUITE:TIER -->`` and ``<!-- /leaderboard -->`` (the
full report of every suite, ``report/``, is written by ``python -m bench report``). The performance
table (``<!-- perf -->``) has one block per machine (device and CPU model), each from that machine's newest full
``bench perf`` record in ``results/perf/``, the
suite-cost table (``<!-- cost -->``) from the newest ``bench cost`` record in ``results/cost/``, the
executor tables (``<!-- executors -->``) from every ``bench perf-executors`` record in ``results/perf/``, the
GPU tables (``<!-- gpu -->``, ``<!-- gpu:compact -->``) from the GPU kit's outputs in ``results/gpu/``, the
tuning tables (``<!-- tuning:SUITE:TIER -->``) from the finished studies in ``results/tuning/``.
``tests/test_readme.py`` fails when a table and its records disagree.

Usage: python tools/update_readme.py [--check]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.measure import cost, perf, perf_chunks, perf_executors  # noqa: E402
from bench.records import load_evaluation_records, load_records  # noqa: E402
from bench.results import reproduce  # noqa: E402
from bench.results.leaderboard import leaderboards, render, title  # noqa: E402
from bench.results.report import entry_records  # noqa: E402
from bench.run.tuning import format_values  # noqa: E402

sys.path.insert(0, str(ROOT / "tools"))
import gpu_kit  # noqa: E402

BLOCK = re.compile(r"(<!-- leaderboard:(?P<suite>[\w.-]+):(?P<tier>\w+)(?P<compact>:compact)? -->\n)(?P<body>.*?)"
                   r"(?P<end><!-- /leaderboard -->)", re.S)
RESULTS = ROOT / "results"


PERF_BLOCK = re.compile(r"(<!-- perf -->\n)(?P<body>.*?)(<!-- /perf -->)", re.S)
COST_BLOCK = re.compile(r"(<!-- cost -->\n)(?P<body>.*?)(<!-- /cost -->)", re.S)
EXECUTORS_BLOCK = re.compile(r"(<!-- executors -->\n)(?P<body>.*?)(<!-- /executors -->)", re.S)
CHUNKS_BLOCK = re.compile(r"(<!-- chunks -->\n)(?P<body>.*?)(<!-- /chunks -->)", re.S)
REPRODUCE_BLOCK = re.compile(r"(<!-- reproduce -->\n)(?P<body>.*?)(<!-- /reproduce -->)", re.S)
FAMILY_BLOCK = re.compile(r"(<!-- algorithms:(?P<family>[\w-]+) -->\n)(?P<body>.*?)(<!-- /algorithms -->)", re.S)
TUNING_BLOCK = re.compile(r"(<!-- tuning:(?P<suite>[\w.-]+):(?P<tier>\w+) -->\n)(?P<body>.*?)(?P<end><!-- /tuning -->)", re.S)
GPU_BLOCK = re.compile(r"(<!-- gpu(?P<compact>:compact)? -->\n)(?P<body>.*?)(?P<end><!-- /gpu -->)", re.S)
CLI_BLOCK = re.compile(r"(<!-- cli-reference -->\n)(?P<body>.*?)(<!-- /cli-reference -->)", re.S)
# The pages whose blocks are generated:
PAGES = ("README.md", "docs/*.md", "docs/results/*.md", "docs/reference/*.md", "docs/algorithms/*.md")


def _allowed(field: Any) -> str:
    """A hyperparameter's constraints (pydantic's annotated-types metadata) in words."""
    words = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<"}
    parts = []
    for item in field.metadata:
        for name, symbol in words.items():
            if getattr(item, name, None) is not None:
                parts.append(f"{symbol} {getattr(item, name):g}")
        if getattr(item, "min_length", None):
            parts.append(f"at least {item.min_length} value(s)")
    return ", ".join(parts) or "-"


def _searched(search: Any, field: Any) -> str:
    """A search space in words: `[low, high]` (integers, log-uniform or uniform), or the choices; `-` if not tuned."""
    if search is None:
        return "-"
    if search.choices:
        return "one of " + ", ".join(f"`{c!r}`" for c in search.choices)
    kind = "integers" if field.annotation is int else "log-uniform" if search.log else "uniform"
    return f"[{search.low:g}, {search.high:g}], {kind}"


def algorithm_family(family: str) -> str:
    """Every registered algorithm of ``family``: what it does, after which paper, its hyperparameters
    with their defaults and allowed values, and the task types it runs on (from the registry)."""
    from bench.algorithms import ALGORITHMS

    parts = ["Defaults are each algorithm's own; a suite file may set others under `algorithms:` (Omniglot's MAML "
             "uses `inner_lr: 0.4`), and `--set NAME.FIELD=VALUE` overrides either for one run.", ""]
    for name in ALGORITHMS.names():
        algorithm = ALGORITHMS.get(name)
        if algorithm.family != family:
            continue
        module = sys.modules[algorithm.__module__]
        source = " ".join((module.__doc__ or "").strip().split("\n\n")[0].split())
        summary = " ".join((algorithm.__doc__ or "").strip().split())
        fields = algorithm.Hparams.model_fields
        space = algorithm.Hparams.search_space()
        table = ["| hyperparameter | default | allowed | `bench tune` searches |", "|---|---|---|---|"]
        table += [f"| `{key}` | `{field.default!r}` | {_allowed(field)} | {_searched(space.get(key), field)} |"
                  for key, field in fields.items()]
        parts += [f"### `{name}`", "", summary, "", f"Source: {source}", "",
                  f"Task types: {', '.join(sorted(algorithm.task_types))}. File: `{module.__name__.replace('.', '/')}.py`.",
                  "", *(table if fields else ["No hyperparameters."]), ""]
    return "\n".join(parts).rstrip()


def cli_reference() -> str:
    """Every command's ``--help``, as argparse prints it at 100 columns."""
    import argparse
    import os

    from bench.cli import COMMANDS, build_parser

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: fix the width so the page is stable
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    parts = ["## `python -m bench`", "", "```text", parser.format_help().rstrip(), "```"]
    for command in COMMANDS:
        parts += ["", f"## `{command.name}`", "", "```text", commands[command.name].format_help().rstrip(), "```"]
    return "\n".join(parts)


def _rate(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:,.0f}"  # none: an evaluation, or nothing meta-trained


def compact_table(boards: list[tuple[dict, Any]], results_dir: Path) -> str:
    """The front page's leaderboard: rank, algorithm, mean ± 95% interval, seeds and throughput, under
    the machine the records were measured on."""
    out = []
    for description, table in boards:
        stored = load_records(results_dir, description["suite"]) + load_evaluation_records(results_dir, description["suite"])
        counted = entry_records(stored, description)  # the rows' records
        environments = [record["environment"] for runs in counted.values() for record in runs]
        machines = sorted({f"{e['device_name']}, {e['torch_threads']} torch threads, torch {e['torch']}" for e in environments})
        rows = ["| rank | algorithm | family | mean ± 95% CI | seeds | meta-train tasks/s | test tasks/s |",
                "|---|---|---|---|---|---|---|"]
        rows += [f"| {r.rank:g} | {r.algorithm} | {r.family} | {r.mean:.4g} ± {r.ci95:.3g} | {r.seeds} | "
                 f"{_rate(r.meta_train_tasks_per_s)} | {_rate(r.test_tasks_per_s)} |" for r in table.itertuples(index=False)]
        out.append(f"**{title(description)}**; throughput measured on {' and '.join(machines)}:\n\n" + "\n".join(rows))
    return "\n\n".join(out)


def tuning_block(results_dir: Path, suite: str, tier: str) -> str:
    """Every finished ``bench tune`` study of ``suite`` at ``tier``: its trials, best values and time."""
    studies = [json.loads(path.read_text()) for path in sorted((results_dir / "tuning" / suite / tier).glob("*/study.json"))]
    studies = [s for s in studies if s.get("status") == "completed"]
    if not studies:
        return f"(no finished `bench tune {suite} --tier {tier}` study yet)"
    lines = ["| algorithm | trials (scored) | best trial | best validation | best values | defaults | tuning wall s | study |",
             "|---|---|---|---|---|---|---|---|"]
    for study in sorted(studies, key=lambda s: s["algorithm"]):
        best, scored = study["best"], sum(t["best_val_metric"] is not None for t in study["trials_run"])
        values = format_values(best["values"])
        defaults = format_values({k: study["defaults"].get(k) for k in best["values"]})
        lines.append(f"| {study['algorithm']} | {study['trials']} ({scored}) | {best['number']} | "
                     f"{best['best_val_metric']:.4g} | {values} | {defaults} | {study['tuning_wall_time_s']:.0f} | "
                     f"{study['study_sha256'][:8]} |")
    return "\n".join(lines)


def gpu_kit_runs(results_dir: Path) -> list[tuple[Path, dict[str, Any], dict[str, Any]]]:
    """Each GPU kit output under ``results_dir/gpu/``: its folder, summary and git state (from its run records)."""
    found = []
    for path in sorted((results_dir / "gpu").glob("*/summary.json")):
        git: dict[str, Any] = {}
        for run in (path.parent / "records").rglob("*.json"):
            git = json.loads(run.read_text())["environment"]["git"]
            break
        found.append((path.parent, json.loads(path.read_text()), git))
    return found


def gpu_block(results_dir: Path, compact: bool) -> str:
    """The GPU kit's results: in full (every summary), or compact (its runs and steps, for the README)."""
    found = gpu_kit_runs(results_dir)
    if not found:
        return "(no GPU kit output yet)"

    def origin(folder: Path, git: dict[str, Any]) -> str:
        dirty = " with uncommitted changes" if git.get("dirty") else ""
        return f"`{folder.relative_to(results_dir.parent).as_posix()}/` (commit {(git.get('commit') or '?')[:7]}{dirty})"

    if not compact:
        return "\n\n".join(f"From {origin(folder, git)}:\n\n{gpu_kit.render(summary, level=3).rstrip()}"
                            for folder, summary, git in found)
    lines = ["| kit output | device | algorithm | meta-iterations | ours | published | meta-train tasks/s | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    notes = []
    for folder, summary, git in found:
        for run in summary["runs"]:
            published = run["published"]
            lines.append(f"| {origin(folder, git)} | {run['device']} | {run['algorithm']} ({run['suite']}, {run['tier']}) | "
                         f"{run['meta_iterations']} | {run['mean']:.2f} ± {run['ci95']:.2f} | "
                         f"{'-' if not published else str(published['value']) + ' (' + published['source'] + ')'} | "
                         f"{run['meta_train_tasks_per_s']:.0f} | {run['wall_time_s']:.0f} |")
        steps = ", ".join(f"{s['step']} {'passed' if s['exit_code'] == 0 else 'failed (exit ' + str(s['exit_code']) + ')'}"
                          for s in summary["steps"])
        timing = summary.get("timing")
        agreement = f"; CUDA-event timer / synchronised wall clock {timing['median_ratio']:.3f} per step" if timing else ""
        notes.append(f"{origin(folder, git)}: {steps}{agreement}.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes)


def regenerate(text: str, results_dir: Path = RESULTS) -> str:
    def table(match: re.Match) -> str:
        boards = leaderboards(results_dir, match["suite"], match["tier"])
        body = compact_table(boards, results_dir) if match["compact"] else render(boards, "markdown")
        return f"{match.group(1)}{body}\n{match['end']}"

    def perf_table(match: re.Match) -> str:
        found = [(path, json.loads(path.read_text())) for path in sorted((results_dir / "perf").glob("perf-*.json"))]
        blocks = perf.newest_per_machine([(path, record) for path, record in found if not record["configuration"]["quick"]])
        body = "(no full `bench perf` record yet)" if not blocks else "\n\n".join(
            f"**{' '.join(x for x in perf.machine_of(record) if x)}**, from `{path.relative_to(results_dir.parent)}` "
            f"(commit {(record['environment']['git'].get('commit') or '?')[:7]}):\n\n" + perf.render(record)
            for path, record in blocks)
        return f"{match.group(1)}{body}\n{match.group(3)}"

    def cost_table(match: re.Match) -> str:
        latest: dict[tuple, dict] = {}  # the newest measurement of each suite (and encoder) over every cost record
        sources = []
        for path in sorted((results_dir / "cost").glob("cost-*.json")):
            sources.append(path.relative_to(results_dir.parent).as_posix())
            for result in json.loads(path.read_text())["suites"]:
                latest[(result["suite"], result["tier"], result.get("encoder"))] = result
        body = "(no `bench cost` record yet)" if not latest else (
            "From " + ", ".join(f"`{source}`" for source in sources) + ":\n\n"
            + cost.render([latest[key] for key in sorted(latest, key=lambda k: (k[0], k[1], k[2] or ""))]))
        return f"{match.group(1)}{body}\n{match.group(3)}"

    def perf_records(pattern: str, command: str, render_record, extra=lambda record: "") -> Callable[[re.Match], str]:
        """A block of every ``results/perf/PATTERN`` record, each rendered under where it came from."""

        def table(match: re.Match) -> str:
            found = [(path, json.loads(path.read_text())) for path in sorted((results_dir / "perf").glob(pattern))]
            body = f"(no `bench {command}` record yet)" if not found else "\n\n".join(
                f"From `{path.relative_to(results_dir.parent)}` (commit {(record['git'].get('commit') or '?')[:7]}"
                f"{' with uncommitted changes' if record['git'].get('dirty') else ''}{extra(record)}):\n\n{render_record(record)}"
                for path, record in found)
            return f"{match.group(1)}{body}\n{match.group(3)}"

        return table

    executors_table = perf_records("executors-*.json", "perf-executors", perf_executors.render,
                                   lambda record: f", Ray {record['ray_version']}")
    chunks_table = perf_records("chunks-*.json", "perf-chunks", perf_chunks.render)

    def reproduce_table(match: re.Match) -> str:
        found = [(path, json.loads(path.read_text())) for path in sorted((results_dir / "reproduce").glob("*.json"))]
        body = "(no `bench reproduce` summary yet)" if not found else "\n\n".join(
            f"From `{path.relative_to(results_dir.parent)}` (`bench reproduce` at commit "
            f"{(record['environment']['git'].get('commit') or '?')[:7]} on {record['environment']['cpu']}, "
            f"{(record['environment'].get('cpu_identity') or {}).get('capability')}):\n\n"
            f"{reproduce.render(record, scratch=False)}"
            for path, record in found)
        return f"{match.group(1)}{body}\n{match.group(3)}"

    text = REPRODUCE_BLOCK.sub(reproduce_table, CHUNKS_BLOCK.sub(chunks_table, text))
    text = FAMILY_BLOCK.sub(lambda match: f"{match.group(1)}{algorithm_family(match['family'])}\n{match.group(4)}", text)
    if CLI_BLOCK.search(text):
        text = CLI_BLOCK.sub(lambda match: f"{match.group(1)}{cli_reference()}\n{match.group(3)}", text)
    text = EXECUTORS_BLOCK.sub(executors_table, text)
    text = TUNING_BLOCK.sub(lambda m: f"{m.group(1)}{tuning_block(results_dir, m['suite'], m['tier'])}\n{m['end']}", text)
    text = GPU_BLOCK.sub(lambda match: f"{match.group(1)}{gpu_block(results_dir, bool(match['compact']))}\n{match['end']}", text)
    return COST_BLOCK.sub(cost_table, PERF_BLOCK.sub(perf_table, BLOCK.sub(table, text)))


def main() -> int:
    pages = [path for pattern in PAGES for path in sorted(ROOT.glob(pattern))]
    wanted = {path: regenerate(path.read_text()) for path in pages}
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if "--check" in sys.argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} differs from results/; run python tools/update_readme.py", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(exist_ok=True)
        path.write_text(wanted[path])
    return 0


if __name__ == "__main__":
    sys.exit(main())
