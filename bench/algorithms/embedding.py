"""The part shared by the algorithms that classify queries from episode embeddings.

Prototypical, Matching and Relation Networks and MetaOptNet differ only in how they score each
query against the support set (``scores``) and, for some, in their loss; everything else is here.
"""

from __future__ import annotations

from typing import Annotated

import torch

from bench.algorithms.base import Algorithm, Hyperparameters, LearningRate, Problem, Search
from bench.tasks import TaskBatch


class EmbeddingHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001


class EmbeddingBased(Algorithm):
    """Embeds an episode's support and query images with the backbone's features, then scores queries.

    Support and query images of an episode are embedded in one pass; batch norm uses the episode's
    statistics (transductive) or its support set's (inductive), as the suite says. Subclasses
    implement ``scores`` and may add modules in ``build_head``; all parameters are trained by Adam
    at ``lr`` on the query loss.
    """

    task_types = frozenset({"classification"})

    def __init__(self, hparams: EmbeddingHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.backbone = problem.build_backbone(generator)
        self.build_head(generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.lr)

    def protocol_shaped_state(self) -> tuple[str, ...]:
        return tuple(f"backbone.{name}" for name in self.backbone.head_names)  # scores come from the features

    def build_head(self, generator: torch.Generator) -> None:
        """Create any parameters besides the backbone's (drawn from ``generator``)."""

    def scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """(B, n_support, d) support embeddings with (B, n_support) labels, (B, n_query, d) queries -> (B, n_query, ways)."""
        raise NotImplementedError

    def logits(self, batch: TaskBatch) -> torch.Tensor:
        support, query = self.embed_episode(self.backbone.params(), batch)
        return self.scores(support, batch.support_y, query, self.problem.ways_of(batch))

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        return self.problem.loss(self.logits(batch), batch.query_y).mean()

    @torch.no_grad()
    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0  # a query is scored against the support set; no gradient step adapts anything

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        return self.problem.metric(self.logits(batch), batch.query_y)
