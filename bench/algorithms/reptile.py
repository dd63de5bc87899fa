"""Reptile: Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018.
https://arxiv.org/abs/1803.02999
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Problem, Search, StepSize, register
from bench.algorithms.gradient import GradientBased, per_task, sgd_steps
from bench.config import MAX_STEPS
from bench.models.mlp import Params
from bench.tasks import TaskBatch


class ReptileHparams(Hyperparameters):
    inner_lr: Annotated[StepSize, Search(1e-3, 1.0, log=True)] = 0.02
    inner_steps: Annotated[int, Field(ge=1, le=MAX_STEPS), Search(1, 10)] = 5  # 0 steps would never move the initialisation
    outer_lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001


@register("reptile")
class Reptile(GradientBased):
    """Reptile (Nichol et al. 2018): train on each task with plain SGD, then move the initialisation towards the adapted weights.

    The step towards the mean adapted weights, theta - mean(phi), is used as a pseudo-gradient
    for Adam (the batched variant of the paper's outer update). Meta-training adapts on all of a
    task's points (support and query); evaluation adapts on the support set only.
    """

    Hparams = ReptileHparams
    hparams: ReptileHparams

    def __init__(self, hparams: ReptileHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.outer_lr)

    def accumulate_meta_gradient(self, batch: TaskBatch) -> torch.Tensor:
        meta = {k: v.detach() for k, v in self.backbone.params().items()}
        adapted_sum = {k: torch.zeros_like(meta[k]) for k in self.adapted_names}
        losses = []
        for chunk in self.task_chunks(batch):
            x = torch.cat([chunk.support_x, chunk.query_x], dim=1)
            y = torch.cat([chunk.support_y, chunk.query_y], dim=1)

            def task_loss(p: Params) -> torch.Tensor:
                return self.problem.loss(self.backbone.functional(p, x), y)  # noqa: B023 (used within this iteration)

            # Only what the inner loop adapts gets a copy per task: the rest (the word-CNN's embeddings, the
            # fine-tuned transformer) does not move, and per-task copies of the transformer would not fit.
            start = {k: v.clone().requires_grad_() for k, v in per_task(meta, len(chunk), self.adapted_names).items()}
            adapted = sgd_steps(task_loss, start, self.adapted_names, self.hparams.inner_steps, self.hparams.inner_lr, False)
            for name in adapted_sum:
                adapted_sum[name] += adapted[name].detach().sum(dim=0)
            with torch.no_grad():
                losses.append(task_loss(adapted))
        for name, param in self.backbone.named_parameters():
            # What the inner loop does not adapt stays where it is: its Reptile step is zero.
            step = param.detach() - adapted_sum[name] / len(batch) if name in adapted_sum else torch.zeros_like(param)
            param.grad = step if param.grad is None else param.grad + step
        return torch.cat(losses).mean()
