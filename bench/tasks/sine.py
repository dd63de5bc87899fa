"""Few-shot sine-wave regression (Finn, Abbeel and Levine, ICML 2017, section 5.1)."""

from __future__ import annotations

import torch

from bench.config import SineData, Suite
from bench.seeding import derive_seed
from bench.tasks.base import TaskBatch


class SineTasks:
    """Task i of (split, seed): y = A sin(x - phase) with its own A, phase and inputs.

    Each task draws from a generator seeded by (suite, split, seed, i), so any task can be
    regenerated alone. Support and query inputs are independent draws from the input range.
    """

    eval_chunk = None  # 600 sine tasks are small; one batch keeps the recorded hashes comparable
    in_shape = (1,)

    def __init__(self, suite: Suite, device: torch.device | None = None) -> None:
        del device  # drawn on the host (the episode hashes are of host tensors); the runner moves them
        self.suite_name = suite.name
        assert isinstance(suite.data, SineData), "a regression suite's data is sine (validated)"
        self.config = suite.data
        self.shots = suite.shots
        self.queries = suite.queries

    def batch(self, split: str, seed: int, indices: range) -> TaskBatch:
        n_points = self.shots + self.queries
        params = torch.empty(len(indices), 2)
        inputs = torch.empty(len(indices), n_points, 1)
        gen = torch.Generator()
        for row, index in enumerate(indices):
            gen.manual_seed(derive_seed(self.suite_name, split, seed, index))
            torch.rand(2, out=params[row], generator=gen)
            torch.rand(n_points, 1, out=inputs[row], generator=gen)
        (a_lo, a_hi), (p_lo, p_hi), (x_lo, x_hi) = (
            self.config.amplitude_range, self.config.phase_range, self.config.input_range
        )
        amplitude = (a_lo + (a_hi - a_lo) * params[:, 0]).view(-1, 1, 1)
        phase = (p_lo + (p_hi - p_lo) * params[:, 1]).view(-1, 1, 1)
        x = x_lo + (x_hi - x_lo) * inputs
        y = amplitude * torch.sin(x - phase)
        return TaskBatch(x[:, : self.shots], y[:, : self.shots], x[:, self.shots :], y[:, self.shots :])
