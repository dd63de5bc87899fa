"""TIM: Boudiaf, Ziko, Rony, Dolz, Piantanida and Ben Ayed, "Information Maximization for Few-Shot
Learning", NeurIPS 2020. https://arxiv.org/abs/2008.11297
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, InnerSteps, LearningRate, Search, register
from bench.algorithms.protonet import class_means
from bench.algorithms.simpleshot import SimpleShot, transformed
from bench.tasks import TaskBatch


class TIMHparams(Hyperparameters):
    # Pre-training and features as SimpleShot's (its lr, transform and mean_decay).
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    transform: Literal["CL2N", "L2N", "UN"] = "CL2N"
    mean_decay: float = Field(default=0.99, ge=0.0, lt=1.0)
    # easyfsl's TIM defaults, which the equivalence test runs: 50 Adam steps at 1e-4 on the prototypes,
    # cosine logits at temperature 10 (the paper: 1,000 steps, squared distances at 15).
    steps: Annotated[InnerSteps, Search(10, 200)] = 50
    step_lr: Annotated[LearningRate, Search(1e-5, 1e-2, log=True)] = 1e-4
    temperature: float = Field(default=10.0, gt=0.0)
    cross_entropy_weight: float = Field(default=1.0, ge=0.0)
    marginal_entropy_weight: float = Field(default=1.0, ge=0.0)
    conditional_entropy_weight: Annotated[float, Field(ge=0.0), Search(0.0, 1.0)] = 0.1


def information_maximization_scores(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
                                    hparams: TIMHparams) -> torch.Tensor:
    """Cosine scores (B, n_query, ways) of the queries to prototypes fitted by Adam to each task's support
    cross-entropy less the mutual information between its queries and their predicted labels
    (H(Y_Q) - w H(Y_Q | X_Q)). Tasks are fitted together: Adam is elementwise, so summing the tasks'
    losses gives each task the steps it would get alone."""
    prototypes = class_means(support, labels, ways).detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([prototypes], lr=hparams.step_lr)
    one_hot = F.one_hot(labels, ways).to(support.dtype)

    def logits(features: torch.Tensor) -> torch.Tensor:
        return hparams.temperature * F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)

    with torch.enable_grad():
        for _ in range(hparams.steps):
            cross_entropy = -(one_hot * logits(support).log_softmax(-1)).sum(-1).mean(-1)
            probabilities = logits(query).softmax(-1)
            conditional_entropy = -(probabilities * torch.log(probabilities + 1e-12)).sum(-1).mean(-1)
            marginal = probabilities.mean(1)
            marginal_entropy = -(marginal * torch.log(marginal)).sum(-1)
            loss = (hparams.cross_entropy_weight * cross_entropy
                    - (hparams.marginal_entropy_weight * marginal_entropy
                       - hparams.conditional_entropy_weight * conditional_entropy))
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
    with torch.no_grad():
        return logits(query) / hparams.temperature


@register("tim")
class TIM(SimpleShot):
    """TIM (Boudiaf et al. 2020): pre-train the backbone as SimpleShot does, then fit each task's prototypes to its support labels while maximising the mutual information between its queries and their predicted labels (transductive).

    The pre-training and the feature transform (CL2N) are SimpleShot's. At test time each task's
    prototypes start at its class means of support features and take ``steps`` Adam steps on the
    support cross-entropy minus the query mutual information (the marginal entropy of the
    predicted labels, which keeps them balanced, less the weighted conditional entropy, which
    makes them confident); queries are scored by their cosine to the fitted prototypes. This is
    TIM-GD with easyfsl's objective and defaults (equal to easyfsl's TIM on the same features,
    tested). Transductive: it runs on suites with ``inference: transductive`` only.
    """

    Hparams = TIMHparams  # type: ignore[assignment]
    hparams: TIMHparams  # type: ignore[assignment]
    inference = "transductive"

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        transform = self.hparams.transform
        with torch.no_grad():
            support, query = transformed(*self.embed_episode(self.backbone.params(), batch),
                                         self.base_mean() if transform == "CL2N" else None, transform != "UN")
        scores = information_maximization_scores(support, batch.support_y, query, self.problem.ways_of(batch),
                                                 self.hparams)
        return self.problem.metric(scores, batch.query_y)

