"""FEAT: Ye, Hu, Zhan and Sha, "Few-Shot Learning via Embedding Adaptation with Set-to-Set Functions",
CVPR 2020. https://arxiv.org/abs/1812.03664
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from bench.algorithms.base import Hyperparameters, LearningRate, Search, register
from bench.algorithms.embedding import EmbeddingBased
from bench.algorithms.protonet import class_means
from bench.tasks import TaskBatch


class FEATHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    temperature: Annotated[float, Field(gt=0.0), Search(1.0, 128.0, log=True)] = 64.0  # the paper's ConvNet value
    balance: Annotated[float, Field(ge=0.0), Search(0.0, 1.0)] = 0.1  # the weight of the contrastive regulariser
    regulariser_temperature: float = Field(default=16.0, gt=0.0)  # FEAT's temperature2
    dropout: float = Field(default=0.5, ge=0.0, lt=1.0)  # in the set-to-set attention while training, as FEAT's code


class SetAttention(nn.Module):
    """FEAT's set-to-set function: one-head scaled dot-product self-attention over a set, with a
    residual connection and layer norm (FEAT's ``MultiHeadAttention(1, d, d, d)``, whose weights
    easyfsl loads; initialised as there, from the run's generator)."""

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.query = nn.Linear(dim, dim, bias=False, device="meta")
        self.key = nn.Linear(dim, dim, bias=False, device="meta")
        self.value = nn.Linear(dim, dim, bias=False, device="meta")
        self.out = nn.Linear(dim, dim, device="meta")
        self.norm = nn.LayerNorm(dim, device="meta")
        self.to_empty(device="cpu")
        with torch.no_grad():
            std = math.sqrt(1.0 / dim)  # normal(0, sqrt(2 / (d + d))) for the three projections; Xavier for out
            for layer in (self.query, self.key, self.value, self.out):
                layer.weight.normal_(0.0, std, generator=generator)
            self.out.bias.uniform_(-1 / math.sqrt(dim), 1 / math.sqrt(dim), generator=generator)
            self.norm.weight.fill_(1.0)
            self.norm.bias.zero_()

    def forward(self, x: torch.Tensor, dropout: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, L, d) sets -> (N, L, d); ``dropout`` (training) draws its masks from ``generator``, not global state."""

        def drop(t: torch.Tensor) -> torch.Tensor:
            if not dropout:
                return t
            keep = torch.rand(t.shape, generator=generator, dtype=t.dtype).to(t.device) >= dropout
            return t * keep / (1 - dropout)

        attention = (self.query(x) @ self.key(x).transpose(1, 2) / math.sqrt(x.shape[-1])).softmax(-1)
        return self.norm(drop(self.out(drop(attention) @ self.value(x))) + x)


@register("feat")
class FEAT(EmbeddingBased):
    """FEAT (Ye et al. 2020): ProtoNet whose class prototypes are first adapted to each other by a set-to-set self-attention (a one-head transformer layer), then queries are scored by squared distance over a temperature.

    Trained on the query loss plus FEAT's contrastive regulariser (weight ``balance``): every
    class's support and query embeddings pass through the same attention as one set, and each is
    classified against the mean of its class's transformed set (temperature ``regulariser_temperature``).
    The attention drops out while training only, with masks drawn from the run's generator. The
    backbone trains from scratch with the rest, as every metric method's here (the paper starts from
    a pre-trained one). The adapted prototypes equal easyfsl's FEAT with the same weights (tested).
    """

    family = "metric-based"
    Hparams = FEATHparams
    hparams: FEATHparams
    # Dropout masks are drawn per call: a meta-batch split into task chunks (a speed choice) would draw others.
    supports_task_chunks = False

    def build_head(self, generator: torch.Generator) -> None:
        self.attention = SetAttention(self.backbone.feature_dim, generator)

    def adapted_prototypes(self, support: torch.Tensor, labels: torch.Tensor, ways: int, training: bool) -> torch.Tensor:
        return self.attention(class_means(support, labels, ways), self.hparams.dropout if training else 0.0,
                              self.generator)

    def scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
               training: bool = False) -> torch.Tensor:
        prototypes = self.adapted_prototypes(support, labels, ways, training)
        return -torch.cdist(query, prototypes).pow(2) / self.hparams.temperature

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        support, query = self.embed_episode(self.backbone.params(), batch)
        ways = self.problem.ways_of(batch)
        loss = self.problem.loss(self.scores(support, batch.support_y, query, ways, training=True), batch.query_y).mean()
        if not self.hparams.balance:
            return loss
        return loss + self.hparams.balance * self.regulariser(support, batch.support_y, query, batch.query_y, ways)

    def regulariser(self, support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor, query_y: torch.Tensor,
                    ways: int) -> torch.Tensor:
        """FEAT's contrastive term: each class's support and query embeddings transformed as one set, each
        classified against the transformed sets' means."""
        embeddings, labels = torch.cat([support, query], 1), torch.cat([support_y, query_y], 1)
        tasks, n, dim = embeddings.shape
        order = labels.argsort(dim=1, stable=True)  # class by class; every class has the same count
        grouped = embeddings.gather(1, order.unsqueeze(-1).expand(-1, -1, dim)).view(tasks * ways, n // ways, dim)
        transformed = self.attention(grouped, self.hparams.dropout, self.generator).view(tasks, n, dim)
        centres = transformed.view(tasks, ways, n // ways, dim).mean(2)
        logits = -torch.cdist(transformed, centres).pow(2) / self.hparams.regulariser_temperature
        return F.cross_entropy(logits.flatten(0, 1), labels.gather(1, order).flatten())
