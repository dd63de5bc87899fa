"""Task sources: every episode is a pure function of (suite, split, seed, index)."""

from __future__ import annotations

import torch

from bench.config import Suite
from bench.tasks.base import TaskBatch, TaskSource, episode_hash
from bench.tasks.sine import SineTasks


def make_task_source(suite: Suite, device: torch.device | None = None) -> TaskSource:
    if suite.data.kind == "sine":
        return SineTasks(suite)
    if suite.data.kind == "text":
        from bench.tasks.text import TextTasks

        return TextTasks(suite, device or torch.device("cpu"))
    from bench.tasks.images import ImageTasks

    return ImageTasks(suite, device or torch.device("cpu"))


__all__ = ["TaskBatch", "TaskSource", "SineTasks", "episode_hash", "make_task_source"]
