"""What the image and the text task sources share: which examples form a classification episode."""

from __future__ import annotations

import torch

from bench.config import Suite
from bench.datasets.base import SPLITS
from bench.datasets.shapes import shape_problem
from bench.errors import BenchError
from bench.tasks.base import class_groups, draw_episodes
from bench.tasks.episode_files import episode_indices, load_test_episodes


class ClassEpisodes:
    """Episode i of (split, seed) as indices: ``ways`` classes of the split (of one group under
    ``grouped_episodes``), ``shots + queries`` of each class's examples; drawn on the CPU from a
    generator seeded by (suite, split, seed, i), or read from the suite's ``test_episodes`` file.
    A subclass gathers the inputs those indices name."""

    def __init__(self, suite: Suite, sizes: dict[str, dict[str, int]]) -> None:
        """``sizes``: the examples of each class of each split, the split's class order as drawn."""
        for split in SPLITS:  # checked before any work; again on what was read
            if (problem := shape_problem(suite, split, sizes.get(split, {}))) is not None:
                raise BenchError(problem)
        self.suite_name = suite.name
        self.shapes = suite.episode_shape
        self.split_class_names = {split: list(split_sizes) for split, split_sizes in sizes.items()}
        # Class sizes per split on the CPU, where the episode indices are drawn (no device sync per batch).
        self.split_sizes = {split: torch.tensor(list(split_sizes.values())) for split, split_sizes in sizes.items()}
        self.width = max((n for split_sizes in sizes.values() for n in split_sizes.values()), default=0)
        self.test_episodes = load_test_episodes(suite, sizes)
        self.grouped = suite.grouped_episodes
        self._groups: dict[tuple[str, int], list[torch.Tensor]] = {}

    def _indices(self, split: str, seed: int, indices: range, ways: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        if split == "test" and self.test_episodes is not None:
            return episode_indices(self.test_episodes, self.split_class_names["test"], indices)
        groups = None
        if self.grouped:
            if (split, ways) not in self._groups:
                self._groups[split, ways] = class_groups(self.split_class_names[split], ways)
            groups = self._groups[split, ways]
        return draw_episodes(self.suite_name, split, seed, indices, self.split_sizes[split], self.width, ways, k, groups)

    def episode_examples(self, split: str, seed: int, indices: range) -> tuple[torch.Tensor, torch.Tensor]:
        """Episodes ``indices`` of (split, seed): classes (B, ways) as positions in the split's class
        list, and each class's examples (B, ways, shots + queries) as positions among its examples."""
        shape = self.shapes["train" if split == "train" else "eval"]
        assert shape["ways"] is not None, "a classification suite has ways (validated)"
        return self._indices(split, seed, indices, shape["ways"], shape["shots"] + shape["queries"])
