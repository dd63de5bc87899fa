"""Meta-Baseline: Chen, Liu, Xu, Darrell and Wang, "Meta-Baseline: Exploring Simple Meta-Learning for
Few-Shot Learning", ICCV 2021. https://arxiv.org/abs/2003.04390
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Problem, Search, register
from bench.algorithms.baseline import Baseline
from bench.algorithms.protonet import class_means
from bench.tasks import TaskBatch


class MetaBaselineHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    # The share of the meta-iterations spent pre-training (the classifier stage); the rest is the meta stage.
    pretrain_fraction: Annotated[float, Field(ge=0.0, le=1.0), Search(0.2, 0.8)] = 0.5
    temperature_init: float = Field(default=10.0, gt=0.0)  # the paper's learnable scale tau, initially 10


def cosine_scores(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
                  temperature: torch.Tensor) -> torch.Tensor:
    """Scores (B, n_query, ways): ``temperature`` times the cosine of each query to each class's mean support feature."""
    centroids = class_means(support, labels, ways)
    return temperature * F.normalize(query, dim=-1) @ F.normalize(centroids, dim=-1).transpose(1, 2)


@register("metabaseline")
class MetaBaseline(Baseline):
    """Meta-Baseline (Chen et al. 2021): pre-train the backbone with a classifier over all training classes, then meta-train it episodically as a cosine nearest-centroid classifier with a learned temperature.

    Both stages share the run's budget: the first ``pretrain_fraction`` of the meta-iterations are
    Baseline's pre-training (cross-entropy over the training classes, on images drawn from
    training episodes), the rest the meta stage (cross-entropy of the query scores, temperature
    times the cosine to each class's mean support feature). One Adam optimizer serves both stages
    (the paper takes SGD for each); a stage's unused parameters get no gradient, so Adam leaves
    them as they are. Tested as in the meta stage, with no step at test time.
    """

    Hparams = MetaBaselineHparams  # type: ignore[assignment]  # fine-tunes nothing: Baseline's other fields do not apply
    hparams: MetaBaselineHparams  # type: ignore[assignment]

    def __init__(self, hparams: MetaBaselineHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)  # type: ignore[arg-type]
        self.temperature = torch.nn.Parameter(torch.tensor(hparams.temperature_init))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.lr)  # now with the temperature
        self.pretrain_iterations = round(hparams.pretrain_fraction * problem.suite.meta_iterations)

    def meta_train_step(self, batch: TaskBatch, iteration: int) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = super().meta_loss(batch) if iteration < self.pretrain_iterations else self.episode_loss(batch)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def episode_loss(self, batch: TaskBatch) -> torch.Tensor:
        support, query = self.embed_episode(self.backbone.params(), batch)
        scores = cosine_scores(support, batch.support_y, query, self.problem.ways_of(batch), self.temperature)
        return F.cross_entropy(scores.flatten(0, 1), batch.query_y.flatten())

    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        with torch.no_grad():
            support, query = self.embed_episode(self.backbone.params(), batch)
            scores = cosine_scores(support, batch.support_y, query, self.problem.ways_of(batch), self.temperature)
            return self.problem.metric(scores, batch.query_y)
