"""``bench cost``: what a whole suite tier costs on this machine, before running it.

For each algorithm that applies, a few meta-training steps and evaluation episodes of the tier
are timed (after a warm-up, with the run's own execution options and the cached data); the tier's
wall time for one process is then projected: meta-iterations x step time, plus the validation and
test episodes x episode time, times the seeds. Where completed records of the tier exist, their
measured run times are reported beside the projection. The suite's start time is measured in a
fresh process: interpreter, imports, planning, loading the cached data and the first meta-batch.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.records import load_records
from bench.run.execution import ExecutionOptions, autocast
from bench.run.runner import PlannedRun, RunPlan, build_algorithm, configure_execution, evaluation_episodes, plan_run
from bench.run.timing import SegmentTimer


def time_algorithm(plan: RunPlan, run: PlannedRun, train_steps: int, eval_episodes: int) -> dict[str, float]:
    suite, device, episodes = plan.suite, plan.device, plan.episodes
    assert episodes is not None, "plan_run loads the episodes"
    algorithm = build_algorithm(plan, run, episodes)
    steps = algorithm.evaluation_steps(suite.test_inner_steps)
    configure_execution(algorithm, plan.execution, episodes.train(run.seed, 0), device,
                        evaluation=(episodes.evaluation_sample, steps, evaluation_episodes(suite, algorithm.learns)))
    algorithm.train()
    seconds = []
    for iteration in range(train_steps + 1):  # the first is a warm-up
        timer = SegmentTimer(device)
        timer.start()
        batch = episodes.train(run.seed, iteration)
        with autocast(plan.execution, device):
            algorithm.meta_train_step(batch, iteration)
        timer.stop()
        if iteration:
            seconds.append(timer.seconds())
    test, _ = episodes.fixed("test", min(eval_episodes, suite.test_tasks))
    with autocast(plan.execution, device):
        algorithm.evaluate(test.slice(0, 1), steps)  # warm-up
        timer = SegmentTimer(device)
        timer.start()
        algorithm.evaluate(test, steps)
        timer.stop()
    return {"step_s": statistics.median(seconds), "episode_s": timer.seconds() / len(test), "learns": algorithm.learns}


def start_seconds(suite: str, tier: str, overrides: list[str]) -> float:
    """Wall time of a fresh ``python`` that plans the suite (cached data) and draws its first meta-batch."""
    program = ("import sys; from bench.run.runner import plan_run; import tempfile; "
               f"plan = plan_run({suite!r}, None, None, {tier!r}, tempfile.mkdtemp(), 'cpu', {overrides!r}); "
               "plan.episodes.train(plan.runs[0].seed, 0)")
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", program], check=True, capture_output=True)
    return time.perf_counter() - start


def measured_run_minutes(results_dir: Path, suite: str, tier: str, encoder: str | None) -> tuple[float, int] | None:
    minutes, count = 0.0, 0
    for record in load_records(results_dir, suite):
        if record.get("status") != "completed" or record["suite"]["tier"] != tier:
            continue
        model = record["suite"]["protocol"].get("model", {})
        if encoder is not None and isinstance(model, dict) and model.get("encoder") != encoder:
            continue
        minutes += record["timing"]["wall_time_s"] / 60
        count += 1
    return (minutes, count) if count else None


def suite_cost(suite_name: str, tier: str = "standard", encoder: str | None = None, train_steps: int = 2,
               eval_episodes: int = 10, results_dir: Path = Path("results"),
               progress: Callable[[str], None] = print) -> dict[str, Any]:
    overrides = [f"suite.model.encoder={encoder}"] if encoder else []
    with tempfile.TemporaryDirectory() as scratch:
        plan = plan_run(suite_name, None, None, tier, scratch, "cpu", overrides, ExecutionOptions())
        suite = plan.suite
        seeds = len(suite.seeds)
        rows, total = [], 0.0
        validations = suite.meta_iterations // suite.val_every + (suite.meta_iterations % suite.val_every != 0)
        for run in plan.runs[::seeds]:
            timed = time_algorithm(plan, run, train_steps, eval_episodes)
            # A method that learns nothing validates once (bench/run/runner.py).
            per_run = (suite.meta_iterations * timed["step_s"]
                       + ((validations if timed.pop("learns") else 1) * suite.val_tasks + suite.test_tasks) * timed["episode_s"])
            rows.append({"algorithm": run.algorithm.name, **{k: round(v, 4) for k, v in timed.items()},
                         "projected_run_min": round(per_run / 60, 4)})
            total += per_run * seeds
            progress(f"  {run.algorithm.name}: {timed['step_s']:.3f} s/step, {timed['episode_s'] * 1000:.1f} ms/episode, "
                     f"{per_run / 60:.1f} min/run")
    measured = measured_run_minutes(results_dir, suite.name, tier, encoder)
    return {
        "suite": suite.name, "tier": tier, "encoder": encoder, "algorithms": len(rows), "seeds": seeds,
        "meta_iterations": suite.meta_iterations, "test_tasks": suite.test_tasks,
        # kept to 4 decimals: a smoke tier on a fast CPU projects a few seconds, which 0.1 min would round to zero
        "projected_run_min": round(total / 60, 4),
        "measured_run_min": round(measured[0], 4) if measured else None, "measured_runs": measured[1] if measured else 0,
        "start_s": round(start_seconds(suite_name, tier, overrides), 2),
        "threads": torch.get_num_threads(), "rows": rows,
    }


def render(results: list[dict[str, Any]]) -> str:
    """One Markdown row per suite (and encoder)."""
    lines = ["| suite | tier | runs (algorithms x seeds) | threads | projected run-min | measured run-min (runs) "
             "| start with cached data, s |",
             "|---|---|---|---|---|---|---|"]
    for result in results:
        name = result["suite"] + (f" ({result['encoder']})" if result.get("encoder") else "")
        if "not_measured" in result:
            reason = result["not_measured"].split(":")[0].replace("|", "/")  # the record keeps the whole message
            lines.append(f"| {name} | {result['tier']} | not measured here: {reason} | | | | |")
            continue
        runs = (f"{result['measured_run_min']:.1f} ({result['measured_runs']})" if result["measured_run_min"] is not None else "")
        lines.append(f"| {name} | {result['tier']} | {result['algorithms']} x {result['seeds']} | {result['threads']} "
                     f"| {result['projected_run_min']:.1f} | "
                     f"{runs} | {result['start_s']} |")
    measured = [r for r in results if "not_measured" not in r]
    if measured:
        total = sum(r["projected_run_min"] for r in measured)
        lines.append(f"| **all {len(measured)} measured** | | {sum(r['algorithms'] * r['seeds'] for r in measured)} runs | "
                     f"| **{total:.0f} ({total / 60:.1f} h)** | | max {max(r['start_s'] for r in measured)} |")
    return "\n".join(lines)
