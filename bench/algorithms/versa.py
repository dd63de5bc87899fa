"""Versa: Gordon, Bronskill, Bauer, Nowozin and Turner, "Meta-Learning Probabilistic Inference for
Prediction", ICLR 2019. https://arxiv.org/abs/1805.09921
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from bench.algorithms.base import Hyperparameters, LearningRate, Search, register
from bench.algorithms.embedding import EmbeddingBased
from bench.algorithms.protonet import class_means
from bench.models.init import reset_parameters_
from bench.tasks import TaskBatch


class VersaHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    samples: Annotated[int, Field(ge=1, le=1000)] = 10  # classifier samples per task while training (the paper's L)


class Amortizer(nn.Module):
    """Versa's amortisation network: a class's mean support feature -> the mean and log-variance of its
    classifier weights and bias, through two ELU layers of the feature width."""

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, dim, device="meta"), nn.ELU(), nn.Linear(dim, dim, device="meta"), nn.ELU())
        self.mean = nn.Linear(dim, dim + 1, device="meta")
        self.log_variance = nn.Linear(dim, dim + 1, device="meta")
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)

    def forward(self, class_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.body(class_features)
        return self.mean(hidden), self.log_variance(hidden)


@register("versa")
class Versa(EmbeddingBased):
    """Versa (Gordon et al. 2019): amortised inference of each task's linear classifier: a network maps each class's mean support feature to a Gaussian over that class's weights and bias, in one forward pass with no inner steps.

    The model-based family's classifier. Each class's weights are inferred from its own support
    features alone (the paper's context-independent approximation), so any number of ways works.
    Training maximises the log of the predictive probability averaged over ``samples`` weight
    samples (reparameterised, drawn from the run's generator). At test time a query is scored
    with the weights' means, so evaluation is deterministic (the paper averages samples there too).
    """

    family = "model-based"
    Hparams = VersaHparams
    hparams: VersaHparams
    # Weight samples are drawn per call: a meta-batch split into task chunks (a speed choice) would draw others.
    supports_task_chunks = False

    def build_head(self, generator: torch.Generator) -> None:
        self.amortizer = Amortizer(self.backbone.feature_dim, generator)

    def classifier(self, support: torch.Tensor, labels: torch.Tensor, ways: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Each task's (B, ways, d + 1) weight-and-bias means and log-variances."""
        return self.amortizer(class_means(support, labels, ways))

    def scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        mean, _ = self.classifier(support, labels, ways)
        return query @ mean[..., :-1].transpose(1, 2) + mean[..., -1].unsqueeze(1)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        support, query = self.embed_episode(self.backbone.params(), batch)
        mean, log_variance = self.classifier(support, batch.support_y, self.problem.ways_of(batch))
        noise = torch.randn((self.hparams.samples, *mean.shape), generator=self.generator, dtype=mean.dtype).to(mean.device)
        weights = mean + noise * (0.5 * log_variance).exp()  # (L, B, ways, d + 1)
        logits = query @ weights[..., :-1].transpose(-1, -2) + weights[..., -1].unsqueeze(-2)  # (L, B, n, ways)
        log_probs = logits.log_softmax(-1).gather(-1, batch.query_y.expand(self.hparams.samples, -1, -1).unsqueeze(-1))
        return -(log_probs.squeeze(-1).logsumexp(0) - math.log(self.hparams.samples)).mean()
