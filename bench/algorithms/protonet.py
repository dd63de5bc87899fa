"""Prototypical Networks: Snell, Swersky and Zemel, "Prototypical Networks for Few-shot Learning",
NeurIPS 2017. https://arxiv.org/abs/1703.05175
"""

from __future__ import annotations

import torch

from bench.algorithms.base import register
from bench.algorithms.embedding import EmbeddingBased, EmbeddingHparams


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """(B, n, d) embeddings and (B, n) labels -> (B, ways, d) per-class means."""
    one_hot = torch.nn.functional.one_hot(labels, ways).to(embeddings.dtype)  # (B, n, ways)
    return one_hot.transpose(1, 2) @ embeddings / one_hot.sum(dim=1).unsqueeze(-1)


@register("protonet")
class ProtoNet(EmbeddingBased):
    """Prototypical Networks (Snell et al. 2017): classify a query by its squared Euclidean distance to each class's mean support embedding.

    The backbone's features are the embedding (its classification head is unused). Support and
    query images of an episode are embedded together, so batch norm uses the episode's statistics (inductive: its support set's).
    """

    family = "metric-based"
    Hparams = EmbeddingHparams
    hparams: EmbeddingHparams

    def scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        return -torch.cdist(query, class_means(support, labels, ways)).pow(2)
