"""Reptile: Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018.
https://arxiv.org/abs/1803.02999
"""

from __future__ import annotations

import torch

from bench.algorithms.base import Hyperparameters, Problem, register
from bench.algorithms.gradient import GradientBased, per_task, sgd_steps
from bench.models.mlp import Params
from bench.tasks import TaskBatch


class ReptileHparams(Hyperparameters):
    inner_lr: float = 0.02
    inner_steps: int = 5
    outer_lr: float = 0.001


@register("reptile")
class Reptile(GradientBased):
    """Reptile (Nichol et al. 2018): train on each task with plain SGD, then move the initialisation towards the adapted weights.

    The step towards the mean adapted weights, theta - mean(phi), is used as a pseudo-gradient
    for Adam (the batched variant of the paper's outer update). Meta-training adapts on all of a
    task's points (support and query); evaluation adapts on the support set only.
    """

    Hparams = ReptileHparams

    def __init__(self, hparams: ReptileHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.outer_lr)

    def meta_train_step(self, batch: TaskBatch, iteration: int) -> torch.Tensor:
        x = torch.cat([batch.support_x, batch.query_x], dim=1)
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        meta = {k: v.detach() for k, v in self.backbone.params().items()}
        start = {k: v.clone().requires_grad_() for k, v in per_task(meta, len(batch)).items()}

        def task_loss(p: Params) -> torch.Tensor:
            return self.problem.loss(self.backbone.functional(p, x), y)

        adapted = sgd_steps(task_loss, start, self.adapted_names, self.hparams.inner_steps, self.hparams.inner_lr, False)
        self.optimizer.zero_grad(set_to_none=True)
        for name, param in self.backbone.named_parameters():
            param.grad = param.detach() - adapted[name].detach().mean(dim=0)
        self.optimizer.step()
        with torch.no_grad():
            return task_loss(adapted).mean()
