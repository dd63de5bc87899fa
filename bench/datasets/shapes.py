"""Can the suite's data supply its episodes? Answered cheaply, before any work.

``class_sizes`` counts the examples of each class of each split without decoding a pixel or
building a cache: from the suite file where it fixes them (Tiny-ImageNet, mini-ImageNet), from an
archive's listing (Omniglot), or by reading the text files (text suites). ``check_episode_shapes``
turns a shortfall into the one-line error that ``validate``, ``run --dry-run`` and ``run`` give
alike, and that the task sources raise too if the data changed in between.
"""

from __future__ import annotations

from collections import Counter

from bench.config import Suite
from bench.datasets import dataset_module
from bench.datasets.base import SPLITS
from bench.errors import BenchError


def class_sizes(suite: Suite) -> dict[str, dict[str, int]] | None:
    """Examples of each class (by name), per split, for a classification suite (None for regression)."""
    module = dataset_module(suite.data.kind)
    return module.class_sizes(suite.data) if module is not None else None


def class_group(name: str) -> str:
    """A class's group under ``grouped_episodes``: its name's first part (Omniglot: the alphabet)."""
    return name.split("/")[0]


def shape_problem(suite: Suite, split: str, sizes: dict[str, int]) -> str | None:
    """Why ``split`` cannot supply the suite's episodes (``sizes``: examples of each class), else None."""
    shape = suite.episode_shape["train" if split == "train" else "eval"]
    cannot = f"suite {suite.name!r} cannot make its episodes"
    if shape["ways"] is None:
        return None  # regression: no classes to draw
    if len(sizes) < shape["ways"]:
        return (f"{cannot}: split {split!r} has {len(sizes)} classes, fewer than {shape['ways']} ways; lower them with "
                "--set suite.ways=N (suite.train_ways=N for training episodes), or give the split more classes")
    if suite.grouped_episodes:
        groups = Counter(class_group(name) for name in sizes)
        if not any(n >= shape["ways"] for n in groups.values()):
            return (f"{cannot}: grouped_episodes draws an episode's classes from one group (the class name's first "
                    f"part), and no group of split {split!r} has {shape['ways']} classes (the largest has "
                    f"{max(groups.values(), default=0)}); lower the ways or set suite.grouped_episodes=false")
    needed = shape["shots"] + shape["queries"]
    small = [name for name, size in sizes.items() if size < needed]
    if small:
        worst = min(small, key=sizes.__getitem__)
        return (f"{cannot}: class {worst!r} of split {split!r} has {sizes[worst]} examples, fewer than shots + "
                f"queries = {needed} ({len(small)} such class(es)); lower --set suite.shots=N or suite.queries=N "
                "(suite.train_shots / suite.train_queries for training episodes)")
    return None


def check_episode_shapes(suite: Suite, sizes: dict[str, dict[str, int]] | None = None) -> None:
    """Raise the ``BenchError`` that says which split cannot make the suite's episodes, if one cannot
    (``sizes``: the suite's ``class_sizes``, when already counted)."""
    if suite.task_type != "classification":
        return
    sizes = sizes if sizes is not None else class_sizes(suite)
    if sizes is None:
        return  # a plugin's data kind without a reader: its task source checks what it draws
    for split in SPLITS:
        problem = shape_problem(suite, split, (sizes or {}).get(split, {}))
        if problem:
            raise BenchError(problem)
