"""Prototypical Networks: Snell, Swersky and Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017. https://arxiv.org/abs/1703.05175
"""

from __future__ import annotations

import torch

from bench.algorithms.base import Algorithm, Hyperparameters, Problem, register
from bench.tasks import TaskBatch


class ProtoNetHparams(Hyperparameters):
    lr: float = 0.001


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """(B, n, d) embeddings and (B, n) labels -> (B, ways, d) per-class means."""
    one_hot = torch.nn.functional.one_hot(labels, ways).to(embeddings.dtype)  # (B, n, ways)
    return one_hot.transpose(1, 2) @ embeddings / one_hot.sum(dim=1).unsqueeze(-1)


@register("protonet")
class ProtoNet(Algorithm):
    """Prototypical Networks (Snell et al. 2017): classify a query by its squared Euclidean distance to each class's mean support embedding.

    The backbone's features are the embedding (its classification head is unused). Support and
    query images of an episode are embedded together, so batch norm uses the episode's statistics.
    """

    family = "metric-based"
    task_types = frozenset({"classification"})
    Hparams = ProtoNetHparams

    def __init__(self, hparams: ProtoNetHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.backbone = problem.build_backbone(generator)
        self.optimizer = torch.optim.Adam(self.backbone.parameters(), lr=hparams.lr)

    def logits(self, batch: TaskBatch) -> torch.Tensor:
        n_support = batch.support_x.shape[1]
        embeddings = self.backbone.features(self.backbone.params(), torch.cat([batch.support_x, batch.query_x], 1))
        support, query = embeddings[:, :n_support], embeddings[:, n_support:]
        ways = int(batch.support_y.max()) + 1
        return -torch.cdist(query, class_means(support, batch.support_y, ways)).pow(2)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        return self.problem.loss(self.logits(batch), batch.query_y).mean()

    @torch.no_grad()
    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        return self.problem.metric(self.logits(batch), batch.query_y)
