"""Transfer baseline: pre-train on the pooled training tasks, fine-tune on each support set.
The "pretrained" baseline of Finn et al. 2017 (section 5.1), the regression counterpart of
Baseline in Chen et al., "A Closer Look at Few-shot Classification", ICLR 2019.
https://arxiv.org/abs/1904.04232
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch

from bench.algorithms.base import Hyperparameters, LearningRate, Problem, Search, StepSize, register
from bench.algorithms.gradient import GradientBased
from bench.tasks import TaskBatch


class TransferHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    finetune_lr: Annotated[StepSize, Search(1e-3, 1.0, log=True)] = 0.01
    finetune: Annotated[Literal["all", "head"], Search(choices=("all", "head"))] = "all"


@register("transfer")
class Transfer(GradientBased):
    """Transfer baseline (pre-train then fine-tune): one network trained on all training tasks' points pooled, then fine-tuned by SGD on each test task's support set.

    Fine-tuning takes the protocol's number of test steps, the same budget the meta-learners get.
    """

    family = "transfer"
    Hparams = TransferHparams
    hparams: TransferHparams

    def __init__(self, hparams: TransferHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.lr)

    @property
    def adapted_names(self) -> tuple[str, ...]:
        return self.backbone.head_names if self.hparams.finetune == "head" else super().adapted_names

    def inner_lr(self) -> float:
        return float(self.hparams.finetune_lr)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        x = torch.cat([batch.support_x, batch.query_x], dim=1)
        y = torch.cat([batch.support_y, batch.query_y], dim=1)
        return self.problem.loss(self.backbone(x), y).mean()
