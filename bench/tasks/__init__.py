"""Task sources: every episode is a pure function of (suite, split, seed, index).

``TASK_SOURCES`` maps a suite's ``data.kind`` to its source class (``module:Class``, imported on use);
every other kind is an image dataset, read by ``ImageTasks``. A source is built as ``Source(suite, device)``.
"""

from __future__ import annotations

import importlib

import torch

from bench.config import Suite
from bench.tasks.base import TaskBatch, TaskSource, episode_hash
from bench.tasks.sine import SineTasks

TASK_SOURCES = {"sine": "bench.tasks.sine:SineTasks", "text": "bench.tasks.text:TextTasks"}
IMAGE_TASKS = "bench.tasks.images:ImageTasks"


def make_task_source(suite: Suite, device: torch.device | None = None) -> TaskSource:
    module, _, name = TASK_SOURCES.get(suite.data.kind, IMAGE_TASKS).partition(":")
    return getattr(importlib.import_module(module), name)(suite, device or torch.device("cpu"))


__all__ = ["TASK_SOURCES", "TaskBatch", "TaskSource", "SineTasks", "episode_hash", "make_task_source"]
