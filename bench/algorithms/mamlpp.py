"""MAML++: Antoniou, Edwards and Storkey, "How to train your MAML", ICLR 2019. https://arxiv.org/abs/1810.09502
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import torch
from pydantic import Field
from torch import nn

from bench.algorithms.base import Algorithm, InnerSteps, Problem, Search, register
from bench.algorithms.gradient import per_task, sgd_steps
from bench.algorithms.maml import MAML, MAMLHparams
from bench.models.base import Params
from bench.tasks import TaskBatch

Share = Annotated[float, Field(ge=0.0, le=1.0)]


class MAMLPlusPlusHparams(MAMLHparams):
    inner_steps: Annotated[InnerSteps, Search(1, 5)] = 5  # the paper's 5; its step sizes are learned per step
    learn_step_sizes: bool = True  # LSLR: one learned inner step size per parameter tensor and step, from inner_lr
    # MSL: the share of the meta-iterations over which the query losses of every step count, annealed
    # towards the last step's alone (the paper's first 10 of 100 epochs for 5 steps).
    multi_step_loss_share: Annotated[Share, Search(0.0, 0.5)] = 0.1
    # DA: the share of the meta-iterations taken first order before second order starts (the paper's 50 of 150 epochs).
    first_order_share: Annotated[Share, Search(0.0, 0.5)] = 1 / 3


def step_loss_weights(steps: int, iteration: int, annealed_iterations: int) -> list[float]:
    """The weight of each inner step's query loss at ``iteration`` (Antoniou et al.'s schedule): uniform at
    first, every step but the last decaying linearly to 0.03 / steps over ``annealed_iterations``, the
    last taking what they give up; after that the last step's loss alone."""
    if steps <= 1 or iteration >= annealed_iterations:
        return [0.0] * (steps - 1) + [1.0]
    progress = iteration / annealed_iterations
    earlier = max((1.0 - progress) / steps, 0.03 / steps)
    return [earlier] * (steps - 1) + [1.0 - (steps - 1) * earlier]


@register("mamlpp")
class MAMLPlusPlus(MAML):
    """MAML++ (Antoniou et al. 2019): MAML with a multi-step loss, learned per-layer per-step inner step sizes and derivative-order annealing.

    The meta-loss is a weighted sum of the query losses after every inner step (MSL), the weights
    annealed from uniform to the last step alone over the first ``multi_step_loss_share`` of the
    meta-iterations; every parameter tensor has its own learned step size for each inner step
    (LSLR, initialised to ``inner_lr``); the first ``first_order_share`` of the meta-iterations are
    first order, the rest second order (DA; ``first_order: true`` keeps it first order throughout).
    The step sizes exist for the steps it trains with, so it adapts with that many steps at test
    time too (records say so). Not included: per-step batch-norm weights and running statistics
    (BNWB, BNRS: batch norm here normalises with each task's own batch statistics, as MAML's
    reference code does) and cosine annealing of the outer learning rate (every gradient-based
    method here keeps Adam at a fixed rate, so rows differ in the method alone).
    """

    Hparams = MAMLPlusPlusHparams
    hparams: MAMLPlusPlusHparams
    iteration: int = 0  # the meta-iteration being taken, which the MSL weights and DA follow

    def __init__(self, hparams: MAMLPlusPlusHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        iterations = problem.suite.meta_iterations
        self.annealed_iterations = round(hparams.multi_step_loss_share * iterations)
        self.first_order_iterations = round(hparams.first_order_share * iterations)

    def add_meta_parameters(self, generator: torch.Generator) -> None:
        self.step_sizes = nn.ParameterDict({
            name.replace(".", "/"): nn.Parameter(torch.full((self.hparams.inner_steps,), float(self.hparams.inner_lr)),
                                                 requires_grad=self.hparams.learn_step_sizes)
            for name in self.adapted_names})

    @classmethod
    def chunks_tasks(cls) -> bool:
        # Its meta_train_step only notes the iteration before Algorithm's, so chunks sum to the same meta-gradient.
        return cls.supports_task_chunks

    def meta_train_step(self, batch: TaskBatch, iteration: int) -> torch.Tensor:
        self.iteration = iteration
        return Algorithm.meta_train_step(self, batch, iteration)

    def evaluation_steps(self, protocol_steps: int) -> int:
        return self.hparams.inner_steps

    def adapted_sequence(self, batch: TaskBatch, params: Params, steps: int, create_graph: bool) -> Iterator[Params]:
        """Each inner step's adapted parameters, each step with its own step sizes."""
        if steps > self.hparams.inner_steps:
            raise ValueError(f"mamlpp learned step sizes for {self.hparams.inner_steps} inner steps, not {steps}")
        problem, model = self.problem, self.backbone
        support_x = batch.support_x
        if not set(self.adapted_names) & set(getattr(model, "task_shared_names", ())):
            support_x = model.shared_encoding(params, support_x)

        def support_loss(p: Params) -> torch.Tensor:
            return problem.loss(model.functional(p, support_x), batch.support_y)

        for step in range(steps):
            step_sizes = {name: self.step_sizes[name.replace(".", "/")][step] for name in self.adapted_names}
            params = sgd_steps(support_loss, params, self.adapted_names, 1, step_sizes, create_graph)
            yield params

    def adapt(self, batch: TaskBatch, params: Params, steps: int, create_graph: bool) -> Params:
        adapted = params
        for adapted in self.adapted_sequence(batch, params, steps, create_graph):  # noqa: B007 (the last one is returned)
            pass
        return adapted

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        steps = self.hparams.inner_steps
        second_order = not self.hparams.first_order and self.iteration >= self.first_order_iterations
        params = per_task(self.backbone.params(), len(batch), self.adapted_names)
        if steps == 0:
            return self.problem.loss(self.query_predictions(batch, params), batch.query_y).mean()
        weights = step_loss_weights(steps, self.iteration, self.annealed_iterations)
        total = torch.zeros((), device=batch.query_x.device)
        for weight, adapted in zip(weights, self.adapted_sequence(batch, params, steps, second_order), strict=True):
            if weight:
                total = total + weight * self.problem.loss(self.query_predictions(batch, adapted), batch.query_y).mean()
        return total
