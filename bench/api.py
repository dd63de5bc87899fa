"""The Python API the CLI is a thin layer over; notebooks can call these directly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.algorithms import ALGORITHMS
from bench.config import available_suites, load_suite
from bench.datasets import check_available
from bench.datasets.shapes import check_episode_shapes, class_sizes
from bench.errors import BenchError
from bench.runner import check_suite_algorithms, execute, plan_run


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


def validate_suites(names: list[str] | None = None, without_data: list[str] | None = None) -> list[str]:
    """Check every suite at every tier as ``run`` would before any work; returns the errors (empty
    when all are valid). Where the suite's data files are present, its splits are checked against
    the episode shapes too; the suites whose data is absent are appended to ``without_data``."""
    errors = []
    counted: dict[str, dict[str, dict[str, int]] | None] = {}  # tiers share their data: count it once
    for name in names or available_suites():
        try:
            for tier in load_suite(name).tiers:
                suite = load_suite(name, tier=tier)
                check_suite_algorithms(suite)
                if suite.task_type == "classification":
                    try:
                        check_available(suite)
                    except BenchError:
                        if without_data is not None and name not in without_data:
                            without_data.append(name)
                        continue
                    data = json.dumps(suite.data.model_dump(mode="json"), sort_keys=True)
                    if data not in counted:
                        counted[data] = class_sizes(suite)
                    check_episode_shapes(suite, counted[data])
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
