"""Task sources: every episode is a pure function of (suite, split, seed, index).

``TASK_SOURCES`` maps a suite's ``data.kind`` to its source class (``module:Class``, imported on use);
a plugin's kind names its own (``bench.config.register_data_kind``); every other kind is an image
dataset, read by ``ImageTasks``. A source is built as ``Source(suite, device)``.
"""

from __future__ import annotations

import importlib

import torch

from bench.config import Suite, plugin_data_kind
from bench.errors import BenchError
from bench.tasks.base import TaskBatch, TaskSource, episode_hash
from bench.tasks.sine import SineTasks

TASK_SOURCES = {"sine": "bench.tasks.sine:SineTasks", "text": "bench.tasks.text:TextTasks"}
IMAGE_TASKS = "bench.tasks.images:ImageTasks"


def make_task_source(suite: Suite, device: torch.device | None = None) -> TaskSource:
    plugin = plugin_data_kind(suite.data.kind)
    module, _, name = (plugin.source if plugin else TASK_SOURCES.get(suite.data.kind, IMAGE_TASKS)).partition(":")
    try:
        source = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"data kind {suite.data.kind!r}: its task source {module}:{name} cannot be loaded ({exc}); "
                         "fix or reinstall the plugin") from None
    return source(suite, device or torch.device("cpu"))


__all__ = ["TASK_SOURCES", "TaskBatch", "TaskSource", "SineTasks", "episode_hash", "make_task_source"]
