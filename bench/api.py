"""The Python API the CLI is a thin layer over; notebooks can call these directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.algorithms import ALGORITHMS
from bench.config import available_suites, load_suite
from bench.errors import BenchError
from bench.runner import execute, plan_run


def list_algorithms() -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "family": ALGORITHMS.get(name).family,
            "task_types": sorted(ALGORITHMS.get(name).task_types),
            "summary": ALGORITHMS.get(name).summary(),
            "module": ALGORITHMS.get(name).__module__,
        }
        for name in ALGORITHMS.names()
    ]


def list_suites() -> list[dict[str, Any]]:
    out = []
    for name in available_suites():
        suite = load_suite(name)
        out.append({
            "name": name,
            "version": suite.version,
            "task_type": suite.task_type,
            "protocol": suite.protocol,
            "description": suite.description,
            "tiers": sorted(load_suite(name).tiers),
            "default_tier": suite.default_tier,
        })
    return out


def validate_suites(names: list[str] | None = None) -> list[str]:
    """Load every suite at every tier; returns the errors (empty when all are valid)."""
    errors = []
    for name in names or available_suites():
        try:
            for tier in load_suite(name).tiers:
                load_suite(name, tier=tier)
        except BenchError as exc:
            errors.append(str(exc))
    return errors


def run(
    suite: str,
    algorithms: list[str] | None = None,
    seeds: list[int] | None = None,
    tier: str | None = None,
    results_dir: Path | str = "results",
    device: str = "auto",
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
    executor: Any = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Run ``algorithms`` (all that apply when None) on ``suite``; returns the run records.

    ``executor``: ``bench.executors.LocalExecutor()`` (the default) or ``RayExecutor(address, ...)``;
    ``resume`` skips runs finished in ``results_dir`` and continues interrupted ones."""
    plan = plan_run(suite, algorithms, seeds, tier, results_dir, device, overrides)
    return execute(plan, progress=progress, executor=executor, resume=resume)
