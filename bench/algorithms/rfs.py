"""RFS: Tian, Wang, Krishnan, Tenenbaum and Isola, "Rethinking Few-Shot Image Classification: a Good
Embedding Is All You Need?", ECCV 2020. https://arxiv.org/abs/2003.11539
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Search, register
from bench.algorithms.baseline import Baseline
from bench.algorithms.heads import logistic_regression_scores
from bench.tasks import TaskBatch


class RFSHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    # The reference code's classifier: scikit-learn's LogisticRegression, L2 penalty, C = 1, lbfgs, 1,000 iterations.
    head_c: Annotated[float, Field(gt=0.0), Search(0.01, 100.0, log=True)] = 1.0
    head_max_iter: int = Field(default=1000, ge=1)


@register("rfs")
class RFS(Baseline):
    """RFS (Tian et al. 2020): pre-train the backbone with a linear classifier over all training classes, then fit a logistic regression on each test task's L2-normalised support features.

    Pre-training is Baseline's (cross-entropy over the training classes, on images drawn from
    training episodes); the paper's optional self-distillation rounds are not run. At test time
    the features are computed once per episode (batch norm as Baseline's), L2-normalised, and
    scikit-learn's LogisticRegression is fitted per task with the reference code's settings; no
    gradient step is taken.
    """

    Hparams = RFSHparams  # type: ignore[assignment]  # RFS fine-tunes nothing: Baseline's other fields do not apply
    hparams: RFSHparams  # type: ignore[assignment]

    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        ways = self.problem.ways_of(batch)
        with torch.no_grad():
            support, query = (F.normalize(f, dim=-1) for f in self.embed_episode(self.backbone.params(), batch))
        scores = [logistic_regression_scores(self.name, support[task], batch.support_y[task], query[task], ways,
                                             self.hparams.head_c, self.hparams.head_max_iter) for task in range(len(batch))]
        return self.problem.metric(torch.stack(scores), batch.query_y)
