"""Task sources: every episode is a pure function of (suite, split, seed, index)."""

from __future__ import annotations

from bench.config import Suite
from bench.tasks.base import TaskBatch, TaskSource, episode_hash
from bench.tasks.sine import SineTasks


def make_task_source(suite: Suite) -> TaskSource:
    if suite.data.kind == "sine":
        return SineTasks(suite)
    raise AssertionError(f"no task source for data kind {suite.data.kind!r}")


__all__ = ["TaskBatch", "TaskSource", "SineTasks", "episode_hash", "make_task_source"]
