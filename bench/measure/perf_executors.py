"""``python -m bench perf-executors``: the Ray executor's overhead against the local one, side by side.

One grid of runs (default: every algorithm of the sine smoke tier, seeds 0-2) is run in each
configuration, the configurations interleaved round by round so that drifting machine load
affects them alike:

- ``local-1t``: the local executor with 1 torch thread, one run after another;
- ``ray-1w``: a local Ray instance with 1 worker of 1 CPU: the same compute plus everything Ray
  adds (scheduling, shipping the plan and the record, each worker loading the data once);
- ``local``: the local executor with torch's default threads, what a user runs on one machine;
- ``ray-2w``: a local Ray instance with 2 workers of 1 CPU each (this machine's 2 cores).

Overhead is ``ray-1w / local-1t`` (same compute, one core); ``local / ray-2w`` is what running
two jobs at a time gains here. Ray's start-up (``ray.init``) is timed apart from the grid. Every
configuration must give the same per-episode numbers as ``local-1t`` (Ray and local with one
thread are bit-identical; torch's default threads may round differently).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import records
from bench.run.environment import environment, git_state
from bench.run.execution import ExecutionOptions
from bench.run.executors import LocalExecutor, RayExecutor, execute, import_ray
from bench.run.runner import plan_run

FORMAT = 1
CONFIGURATIONS = ("local-1t", "ray-1w", "local", "ray-2w")
TASK_CHUNK = 4  # fixed, so no configuration pays for measuring it


def _grid(suite: str, tier: str, algorithms: list[str] | None, seeds: list[int], results_dir: Path,
          threads: int | None) -> Any:
    return plan_run(suite, algorithms, seeds, tier, results_dir, "cpu", (),
                    ExecutionOptions(task_chunk=TASK_CHUNK, threads=threads, checkpoint_every=0))


def measure(suite: str = "sine", tier: str = "smoke", algorithms: list[str] | None = None, seeds: list[int] | None = None,
            rounds: int = 2) -> dict[str, Any]:
    ray = import_ray()
    seeds = seeds if seeds is not None else [0, 1, 2]
    default_threads = torch.get_num_threads()
    walls: dict[str, list[float]] = {c: [] for c in CONFIGURATIONS}
    startups: dict[str, list[float]] = {"ray-1w": [], "ray-2w": []}
    compute: dict[str, list[float]] = {c: [] for c in CONFIGURATIONS}
    reference: dict[tuple[str, int], list[float]] = {}
    identical: dict[str, bool] = {c: True for c in CONFIGURATIONS}
    n_jobs = 0
    with tempfile.TemporaryDirectory(prefix="bench-perf-executors-") as tmp:
        for round_number in range(rounds):
            for name in CONFIGURATIONS:
                results_dir = Path(tmp) / f"{name}-{round_number}"
                if name.startswith("ray"):
                    ray.shutdown()
                    started = time.perf_counter()
                    ray.init(num_cpus=int(name[-2]), include_dashboard=False, log_to_driver=False)
                    startups[name].append(time.perf_counter() - started)
                    executor: LocalExecutor | RayExecutor = RayExecutor(cpus_per_job=1)
                    plan = _grid(suite, tier, algorithms, seeds, results_dir, 1)
                else:
                    executor = LocalExecutor()
                    plan = _grid(suite, tier, algorithms, seeds, results_dir, 1 if name == "local-1t" else default_threads)
                started = time.perf_counter()
                done = execute(plan, progress=False, executor=executor)
                walls[name].append(time.perf_counter() - started)
                torch.set_num_threads(default_threads)  # each run set its own (ExecutionOptions.threads)
                failed = [r["_path"] for r in done if r["status"] != "completed"]
                if failed:
                    raise RuntimeError(f"{name}: runs did not complete: {failed}")
                n_jobs = len(done)
                compute[name].append(sum(r["timing"]["wall_time_s"] for r in done))
                values = {(r["algorithm"]["name"], r["seeds"]["training_seed"]): r["metric"]["per_task"] for r in done}
                if not reference:
                    reference = values
                identical[name] &= values == reference
        ray.shutdown()
    median = {c: statistics.median(v) for c, v in walls.items()}
    return {
        "format": FORMAT,
        "kind": "executor overhead",
        "created_at": records.utc_now(),
        "grid": {"suite": suite, "tier": tier, "algorithms": algorithms or "all that apply", "seeds": seeds,
                 "runs": n_jobs, "task_chunk": TASK_CHUNK, "rounds": rounds, "default_threads": default_threads},
        "wall_s": walls,
        "run_seconds_sum": compute,
        "ray_startup_s": startups,
        "median_wall_s": median,
        "ray_overhead_ratio": median["ray-1w"] / median["local-1t"],
        "ray_overhead_per_run_s": (median["ray-1w"] - median["local-1t"]) / n_jobs,
        "two_workers_speedup_vs_local": median["local"] / median["ray-2w"],
        "identical_to_local_1t": identical,
        "ray_version": ray.__version__,
        "environment": environment(torch.device("cpu")),
        "git": git_state(),
    }


def render(record: dict[str, Any]) -> str:
    grid = record["grid"]
    lines = [f"{grid['suite']} {grid['tier']} tier, {grid['runs']} runs, {grid['rounds']} interleaved rounds (medians):",
             "| configuration | wall s | Ray start-up s | same numbers as local-1t |", "|---|---:|---:|---|"]
    for name, wall in record["median_wall_s"].items():
        startup = record["ray_startup_s"].get(name)
        lines.append(f"| {name} | {wall:.1f} | {statistics.median(startup):.1f} |" if startup else f"| {name} | {wall:.1f} | - |")
        lines[-1] += f" {'yes' if record['identical_to_local_1t'][name] else 'no'} |"
    lines.append(f"Ray overhead (ray-1w / local-1t): {record['ray_overhead_ratio']:.2f}x, "
                 f"{record['ray_overhead_per_run_s'] * 1000:.0f} ms per run; two workers run the grid at "
                 f"{record['two_workers_speedup_vs_local']:.2f}x the speed of the local executor")
    return "\n".join(lines)


def save(record: dict[str, Any], path: Path) -> None:
    records.write_atomic(path, json.dumps(record, indent=1) + "\n")
