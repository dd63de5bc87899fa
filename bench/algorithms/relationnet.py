"""Relation Networks: Sung, Yang, Zhang, Xiang, Torr and Hospedales, "Learning to Compare: Relation
Network for Few-Shot Learning", CVPR 2018. https://arxiv.org/abs/1711.06025
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.algorithms.base import register
from bench.algorithms.embedding import EmbeddingBased, EmbeddingHparams
from bench.models.init import reset_parameters_
from bench.tasks import TaskBatch

BN_EPS = 1e-5


class RelationNetHparams(EmbeddingHparams):
    relation_hidden: tuple[Annotated[int, Field(ge=1)], ...] = Field(default=(64, 8), min_length=1)


def class_sums(embeddings: torch.Tensor, labels: torch.Tensor, ways: int) -> torch.Tensor:
    """(B, n, d) embeddings and (B, n) labels -> (B, ways, d) per-class sums (the paper's K-shot pooling)."""
    return F.one_hot(labels, ways).to(embeddings.dtype).transpose(1, 2) @ embeddings


class RelationModule(nn.Module):
    """Scores (B, n_query, ways, 2d) concatenated pairs -> (B, n_query, ways) in [0, 1].

    Linear layers of widths ``hidden`` with ReLU, then one sigmoid output. Every hidden layer but
    the last has batch norm, standing for the paper's two convolution blocks (with batch norm)
    before its 8-unit layer (without); its statistics are per task over the task's (query, class)
    pairs, and there are no running statistics. Without it, 60 meta-iterations on Omniglot 5-way
    1-shot left every query's scores tied (20% accuracy) for 2 of 3 seeds; with it, 61-68%.
    """

    def __init__(self, in_features: int, hidden: tuple[int, ...], generator: torch.Generator) -> None:
        super().__init__()
        widths = [in_features, *hidden, 1]
        self.layers = nn.ModuleList(nn.Linear(a, b, device="meta") for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.norms = nn.ModuleList(nn.BatchNorm1d(w, track_running_stats=False, device="meta") for w in hidden[:-1])
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        h = pairs
        for index, layer in enumerate(self.layers[:-1]):
            h = layer(h)
            if index < len(self.norms):
                var, mean = torch.var_mean(h, dim=(1, 2), keepdim=True, correction=0)
                h = (h - mean) * torch.rsqrt(var + BN_EPS) * self.norms[index].weight + self.norms[index].bias
            h = F.relu(h)
        return torch.sigmoid(self.layers[-1](h).squeeze(-1))


@register("relationnet")
class RelationNet(EmbeddingBased):
    """Relation Networks (Sung et al. 2018): a learned relation module scores each (class, query) pair of embeddings in [0, 1], trained by regression onto one-hot targets.

    Deviation from the paper: its relation module is two convolution blocks on concatenated
    feature maps; our backbones' ``features`` are flattened vectors, so the relation module here
    is an MLP on the concatenated (class, query) embeddings (:class:`RelationModule`; the default
    widths 64 and 8 stand for the paper's 64-filter convolution blocks and its 8-unit layer). As
    in the paper: a class's embedding is the sum of its support embeddings (K > 1), and the loss is
    the mean squared error between the relation scores and the one-hot query labels. Support and
    query images of an episode are embedded together, so batch norm uses the episode's statistics.
    """

    family = "metric-based"
    Hparams = RelationNetHparams
    hparams: RelationNetHparams
    inductive_batch_norm = False  # the relation module normalises over each task's (query, class) pairs

    def build_head(self, generator: torch.Generator) -> None:
        self.relation = RelationModule(2 * self.backbone.feature_dim, self.hparams.relation_hidden, generator)

    def scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """Relation scores in [0, 1] of each query with each class, (B, n_query, ways)."""
        classes = class_sums(support, labels, ways)  # (B, ways, d)
        shape = (query.shape[0], query.shape[1], ways, query.shape[2])  # (B, n_query, ways, d)
        pairs = torch.cat([classes.unsqueeze(1).expand(shape), query.unsqueeze(2).expand(shape)], dim=-1)
        return self.relation(pairs)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        scores = self.logits(batch)
        return F.mse_loss(scores, F.one_hot(batch.query_y, scores.shape[-1]).to(scores.dtype))
