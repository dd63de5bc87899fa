"""``python -m bench perf-chunks``: does the task-chunk choice survive a loaded machine?

For each algorithm, first the reference: on the machine as it is (run it quiet), every candidate
chunk is timed ``quiet_rounds`` times, interleaved, and its median kept. Then ``load`` background
processes each spin a CPU core, and the chooser (``bench.run.execution.measure_task_chunks`` +
``fastest``, no cache) runs ``choices`` times from scratch; beside it, for comparison, the rule
bench used before (one sample of each candidate after a warm-up, smallest first, stopping at the
first 1.3x slower than the best). Each choice is scored by the reference time of the chunk it
chose over the reference time of the best chunk: 1.0 is the best choice, 2.0 a chunk twice as
slow. The target: every choice of ours within ``TARGET`` (1.3x).
"""

from __future__ import annotations

import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.records import utc_now, write_atomic
from bench.run.environment import environment, git_state
from bench.run.execution import ExecutionOptions, chunk_candidates, fastest, measure_task_chunks, time_meta_gradient
from bench.run.runner import Episodes, build_algorithm, plan_run

log = logging.getLogger(__name__)

TARGET = 1.3
PREVIOUS_STOP = 1.3  # the rule before: stop at the first candidate this much slower than the best so far
SPIN = "while True:\n    pass\n"


def previous_rule(algorithm: Any, batch: Any, device: torch.device, options: ExecutionOptions) -> int:
    """The chunk bench chose before (up to commit 1a5ef9d): one sample of each candidate after a warm-up."""
    candidates = chunk_candidates(len(batch))
    best, best_seconds = candidates[0], float("inf")
    for chunk in candidates:
        time_meta_gradient(algorithm, batch, chunk, device, options)
        seconds = time_meta_gradient(algorithm, batch, chunk, device, options)
        if seconds < best_seconds:
            best, best_seconds = chunk, seconds
        elif seconds > PREVIOUS_STOP * best_seconds:
            break
    return best


def _algorithm(suite: str, tier: str, name: str) -> tuple[Any, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        plan = plan_run(suite, [name], [0], tier, scratch, "cpu")
    episodes = Episodes(plan.suite, plan.device)
    return build_algorithm(plan, plan.runs[0], episodes), episodes.train(0, 0)


def _scored(chosen: list[int], reference: dict[int, float], tasks: int) -> dict[str, Any]:
    best = min(reference.values())
    ratios = [reference[c] / best for c in chosen]
    return {"chunks": chosen, "ratios": ratios, "worst_ratio": max(ratios), "tasks_per_s": [tasks / reference[c] for c in chosen]}


def _spinners(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(count)]


def measure(suite: str = "sine", tier: str = "standard", algorithms: tuple[str, ...] = ("metasgd", "reptile", "maml"),
            load: int = 3, choices: int = 5, quiet_rounds: int = 15) -> dict[str, Any]:
    device, options = torch.device("cpu"), ExecutionOptions()
    rows: list[dict[str, Any]] = []
    for name in algorithms:
        algorithm, batch = _algorithm(suite, tier, name)
        log.info("%s: reference timings, %d interleaved rounds of every chunk", name, quiet_rounds)
        reference = {int(c): statistics.median(v) for c, v in
                     measure_task_chunks(algorithm, batch, device, options, rounds=quiet_rounds, prune=False).items()}
        best = min(reference, key=lambda chunk: reference[chunk])
        ours, previous, measured = [], [], []
        spinners = _spinners(load)
        try:
            for _ in range(choices):
                measured.append(measure_task_chunks(algorithm, batch, device, options))
                ours.append(fastest(measured[-1]))
                previous.append(previous_rule(algorithm, batch, device, options))
        finally:
            for process in spinners:
                process.kill()
                process.wait()
        rows.append({"algorithm": name, "meta_batch": len(batch), "reference_seconds": {str(c): s for c, s in reference.items()},
                     "best": best, "best_tasks_per_s": len(batch) / reference[best],
                     "ours": _scored(ours, reference, len(batch)), "previous": _scored(previous, reference, len(batch)),
                     "ours_samples": measured})
        log.info("%s: best %d; under load ours %s, previous %s", name, best, ours, previous)
    return {"created_at": utc_now(), "environment": environment(device), "git": git_state(),
            "configuration": {"suite": suite, "tier": tier, "algorithms": list(algorithms), "load": load,
                              "choices": choices, "quiet_rounds": quiet_rounds, "target": TARGET,
                              "torch_threads": torch.get_num_threads()},
            "rows": rows, "passed": all(row["ours"]["worst_ratio"] <= TARGET for row in rows)}


def render(record: dict[str, Any]) -> str:
    c = record["configuration"]
    lines = [f"Task-chunk choice under load: {c['suite']} ({c['tier']} tier), {c['load']} CPU-bound background "
             f"processes on {record['environment'].get('cpu_count')} cores ({record['environment'].get('cpu')}), "
             f"{c['choices']} choices each; ratio = reference (quiet) time of the chosen chunk / of the best (1.00 = best); "
             "tasks/s: the chosen chunk's quiet meta-gradient throughput",
             "",
             "| algorithm | best chunk (quiet) | meta-gradient tasks/s (quiet) | ours under load: chunks | worst ratio "
             "| tasks/s (worst) | previous rule: chunks | worst ratio | tasks/s (worst) |",
             "|---|--:|--:|---|--:|--:|---|--:|--:|"]
    for row in record["rows"]:
        ours, previous = row["ours"], row["previous"]
        lines.append(f"| {row['algorithm']} | {row['best']} | {row['best_tasks_per_s']:,.0f} | "
                     f"{', '.join(map(str, ours['chunks']))} | {ours['worst_ratio']:.2f} | {min(ours['tasks_per_s']):,.0f} | "
                     f"{', '.join(map(str, previous['chunks']))} | {previous['worst_ratio']:.2f} | "
                     f"{min(previous['tasks_per_s']):,.0f} |")
    verdict = "PASSED" if record["passed"] else "FAILED"
    lines += ["", f"{verdict}: every choice of ours within {c['target']}x of the best" if record["passed"] else
              f"{verdict}: a choice of ours is more than {c['target']}x slower than the best"]
    return "\n".join(lines)


def save(record: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(record, indent=1) + "\n")
