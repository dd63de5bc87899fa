"""Conditional neural process: Garnelo, Rosenbaum, Maddison, Ramalho, Saxton, Shanahan, Teh,
Rezende and Eslami, "Conditional Neural Processes", ICML 2018. https://arxiv.org/abs/1807.01613
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Algorithm, Hyperparameters, LearningRate, Problem, Search, register
from bench.models import MLP
from bench.tasks import TaskBatch


class CNPHparams(Hyperparameters):
    representation_size: Annotated[int, Field(ge=1)] = 128
    hidden: tuple[Annotated[int, Field(ge=1)], ...] = (128, 128)
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    min_std: Annotated[float, Field(gt=0.0)] = 0.01  # the predicted standard deviation's floor


@register("cnp")
class CNP(Algorithm):
    """Conditional neural process (Garnelo et al. 2018): encode each support pair, average the codes, decode a Gaussian at each query input.

    Model-based: it adapts by a forward pass, with no gradient steps at test time; it trains by
    the query points' Gaussian negative log-likelihood and is scored by the MSE of its mean.
    """

    family = "model-based"
    Hparams = CNPHparams
    hparams: CNPHparams

    def __init__(self, hparams: CNPHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        x_dim, y_dim = problem.in_features, problem.out_features
        self.encoder = MLP(x_dim + y_dim, hparams.hidden, hparams.representation_size, generator)
        self.decoder = MLP(x_dim + hparams.representation_size, hparams.hidden, 2 * y_dim, generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.lr)

    def predict(self, batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation at each query input, each (B, n_query, y_dim)."""
        codes = self.encoder(torch.cat([batch.support_x, batch.support_y], dim=-1))
        representation = codes.mean(dim=1, keepdim=True).expand(-1, batch.query_x.shape[1], -1)
        mean, raw_std = self.decoder(torch.cat([batch.query_x, representation], dim=-1)).chunk(2, dim=-1)
        return mean, self.hparams.min_std + (1 - self.hparams.min_std) * F.softplus(raw_std)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        mean, std = self.predict(batch)
        return -torch.distributions.Normal(mean, std).log_prob(batch.query_y).mean()

    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0  # conditioned on the context points; no gradient step adapts anything

    @torch.no_grad()
    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        mean, _ = self.predict(batch)
        return self.problem.metric(mean, batch.query_y)
