"""CAVIA: Zintgraf, Shiarlis, Kurin, Hofmann and Whiteson, "Fast Context Adaptation via Meta-Learning",
ICML 2019. https://arxiv.org/abs/1810.03642
"""

from __future__ import annotations

import math
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from bench.algorithms.base import Algorithm, Hyperparameters, InnerSteps, LearningRate, Problem, Search, StepSize, register
from bench.algorithms.gradient import EVAL_CHUNK, GradientBased, sgd_steps
from bench.models import build_backbone
from bench.models.base import Params
from bench.tasks import TaskBatch

CONTEXT = "context"


class CAVIAHparams(Hyperparameters):
    inner_lr: Annotated[StepSize, Search(0.01, 10.0, log=True)] = 1.0  # the paper's rate for the context
    inner_steps: Annotated[InnerSteps, Search(1, 5)] = 1
    outer_lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    # The paper's sizes: 4 context parameters for regression, 100 for image classification (None: by task type).
    context_dim: Annotated[int, Field(ge=1)] | None = None
    first_order: bool = False


@register("cavia")
class CAVIA(GradientBased):
    """CAVIA (Zintgraf et al. 2019): adapt only a small context vector per task, which conditions a network meta-learned in the outer loop.

    Each task's context starts at zero and takes the inner gradient steps; the network never
    changes per task, so the inner loop is cheap and cannot overfit the network to a support set.
    The meta-gradient differentiates through the context's steps (second order unless
    ``first_order``). Regression, as in the paper: the context is concatenated to the input.
    Classification: the context sets a FiLM scale and shift (1 + gamma, beta) of the body's
    output features, through a meta-learned linear layer whose biases start at zero (so a zero
    context leaves the features as they are); the paper conditions the output of the third of
    four convolutions, which our Conv-4, shared by every algorithm, does not expose.
    """

    Hparams = CAVIAHparams
    hparams: CAVIAHparams

    def __init__(self, hparams: CAVIAHparams, problem: Problem, generator: torch.Generator) -> None:
        Algorithm.__init__(self, hparams, problem, generator)
        self.context_dim = hparams.context_dim or (100 if problem.classification else 4)
        if problem.classification:
            self.backbone = problem.build_backbone(generator)
            features = self.backbone.feature_dim
            self.film = nn.Linear(self.context_dim, 2 * features, device="meta").to_empty(device="cpu")
            with torch.no_grad():  # nn.Linear's uniform bound, from the run's generator; zero biases
                bound = 1.0 / math.sqrt(self.context_dim)
                self.film.weight.uniform_(-bound, bound, generator=generator)
                self.film.bias.zero_()
        else:
            in_shape = (problem.in_shape[0] + self.context_dim, *problem.in_shape[1:])
            self.backbone = build_backbone(problem.suite.model, in_shape, problem.out_features, generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.outer_lr)

    @property
    def adapted_names(self) -> tuple[str, ...]:
        return (CONTEXT,)

    def initial_context(self, batch: TaskBatch, requires_grad: bool) -> Params:
        """The network's parameters (shared by all tasks) and one zero context per task."""
        params = self.backbone.params()
        dtype = next(iter(params.values())).dtype  # not the inputs': a text suite's are token ids
        context = torch.zeros(len(batch), self.context_dim, dtype=dtype, device=batch.support_x.device,
                              requires_grad=requires_grad)
        return {**params, CONTEXT: context}

    def conditioned(self, params: Params, features: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(params[CONTEXT]).unsqueeze(1).chunk(2, dim=-1)
        return features * (1 + scale) + shift

    def predict(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        context = params[CONTEXT]
        if not self.problem.classification:
            inputs = torch.cat([x, context.unsqueeze(1).expand(*x.shape[:2], self.context_dim)], -1)
            return self.backbone.functional(params, inputs)
        return self.backbone.head(params, self.conditioned(params, self.backbone.features(params, x, stats_from)))

    def adapt(self, batch: TaskBatch, params: Params, steps: int, create_graph: bool) -> Params:
        def support_loss(p: Params) -> torch.Tensor:
            return self.problem.loss(self.predict(p, batch.support_x), batch.support_y)

        return sgd_steps(support_loss, params, self.adapted_names, steps, float(self.hparams.inner_lr), create_graph)

    def query_predictions(self, batch: TaskBatch, adapted: Params) -> torch.Tensor:
        if not self.inductive:
            return self.predict(adapted, batch.query_x)
        _, query = self.embed_episode(adapted, batch)  # the support images only give the batch-norm statistics
        return self.backbone.head(adapted, self.conditioned(adapted, query))

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        adapted = self.adapt(batch, self.initial_context(batch, True), self.hparams.inner_steps,
                             create_graph=not self.hparams.first_order)
        return self.problem.loss(self.query_predictions(batch, adapted), batch.query_y).mean()

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        results = []
        size = min(self.eval_chunk or EVAL_CHUNK, EVAL_CHUNK)
        for chunk in (batch.slice(start, start + size) for start in range(0, len(batch), size)):
            with torch.enable_grad():
                params = self.initial_context(chunk, True)
                params = {k: v if k == CONTEXT else v.detach() for k, v in params.items()}
                adapted = self.adapt(chunk, params, inner_steps, create_graph=False)
            with torch.no_grad():
                results.append(self.problem.metric(self.query_predictions(chunk, adapted), chunk.query_y))
        return torch.cat(results)
