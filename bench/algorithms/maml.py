"""MAML: Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep
Networks", ICML 2017. https://arxiv.org/abs/1703.03400
"""

from __future__ import annotations

from typing import Annotated

import torch

from bench.algorithms.base import Hyperparameters, InnerSteps, LearningRate, Problem, Search, StepSize, register
from bench.algorithms.gradient import GradientBased, per_task
from bench.tasks import TaskBatch


class MAMLHparams(Hyperparameters):
    inner_lr: Annotated[StepSize, Search(1e-3, 1.0, log=True)] = 0.01  # 0: no adaptation (the ablation CI's checks must catch)
    inner_steps: Annotated[InnerSteps, Search(1, 5)] = 1
    outer_lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    first_order: bool = False


@register("maml")
class MAML(GradientBased):
    """MAML (Finn et al. 2017): learn an initialisation from which a few gradient steps on a task's support set fit it.

    Second order by default: the meta-gradient differentiates through the inner steps.
    """

    Hparams = MAMLHparams
    hparams: MAMLHparams

    def __init__(self, hparams: MAMLHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.add_meta_parameters(generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.outer_lr)

    def add_meta_parameters(self, generator: torch.Generator) -> None:
        """Hook for variants that meta-learn more than the initialisation (before the optimizer exists)."""

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        """Mean query loss after adaptation, differentiable with respect to the meta-parameters."""
        params = per_task(self.backbone.params(), len(batch), self.adapted_names)
        adapted = self.adapt(batch, params, self.hparams.inner_steps, create_graph=not self.hparams.first_order)
        return self.problem.loss(self.query_predictions(batch, adapted), batch.query_y).mean()
