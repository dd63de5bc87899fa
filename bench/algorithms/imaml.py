"""iMAML: Rajeswaran, Finn, Kakade and Levine, "Meta-Learning with Implicit Gradients", NeurIPS 2019.
https://arxiv.org/abs/1909.04630
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
from pydantic import Field

from bench.algorithms.base import Hyperparameters, InnerSteps, LearningRate, Problem, Search, StepSize, register
from bench.algorithms.gradient import GradientBased, per_task, sgd_steps
from bench.models.base import Params
from bench.tasks import TaskBatch

Vectors = list[torch.Tensor]  # one tensor per adapted parameter, each with a leading task dimension


class IMAMLHparams(Hyperparameters):
    inner_lr: Annotated[StepSize, Search(1e-3, 1.0, log=True)] = 0.01
    inner_steps: Annotated[InnerSteps, Search(1, 20)] = 5
    outer_lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    # lambda, the proximal term's strength: the adapted weights stay near the initialisation.
    regularization: Annotated[float, Field(gt=0.0), Search(0.1, 10.0, log=True)] = 1.0
    cg_steps: Annotated[int, Field(ge=1, le=100)] = 5  # the paper's 5 conjugate-gradient steps


def task_dot(a: Vectors, b: Vectors) -> torch.Tensor:
    """Per-task inner products, (B,)."""
    return sum((x * y).flatten(1).sum(1) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def conjugate_gradient(apply: Callable[[Vectors], Vectors], rhs: Vectors, steps: int) -> Vectors:
    """``steps`` of conjugate gradient on A x = rhs from x = 0, for every task at once (A symmetric
    positive definite per task, applied by ``apply``); a task whose residual vanished stays where it is."""

    def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(num))

    def scaled(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return s.view(-1, *([1] * (v.dim() - 1))) * v

    x = [torch.zeros_like(r) for r in rhs]
    r = [t.clone() for t in rhs]
    p = [t.clone() for t in rhs]
    rs = task_dot(r, r)
    for _ in range(steps):
        ap = apply(p)
        alpha = ratio(rs, task_dot(p, ap))
        x = [xi + scaled(alpha, pi) for xi, pi in zip(x, p, strict=True)]
        r = [ri - scaled(alpha, api) for ri, api in zip(r, ap, strict=True)]
        new = task_dot(r, r)
        p = [ri + scaled(ratio(new, rs), pi) for ri, pi in zip(r, p, strict=True)]
        rs = new
    return x


@register("imaml")
class IMAML(GradientBased):
    """iMAML (Rajeswaran et al. 2019): MAML whose meta-gradient is implicit: each task adapts to the optimum of its support loss plus a proximal term, and the meta-gradient solves (I + H / lambda) g = grad of the query loss by conjugate gradient.

    The inner loop takes ``inner_steps`` gradient steps on the support loss plus lambda/2 times the
    squared distance to the initialisation (lambda: ``regularization``), with no graph kept; the
    meta-gradient of each task is then the solution of (I + H/lambda) g = the query loss's gradient
    at the adapted weights, H the support loss's Hessian there, by ``cg_steps`` of conjugate
    gradient on Hessian-vector products (memory independent of the inner steps). Test-time
    adaptation takes the same regularised steps. The implicit gradient is exact at the inner
    optimum; tested against a dense solve with the full Hessian.
    """

    Hparams = IMAMLHparams
    hparams: IMAMLHparams

    def __init__(self, hparams: IMAMLHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.outer_lr)

    def support_loss(self, batch: TaskBatch) -> Callable[[Params], torch.Tensor]:
        def loss(p: Params) -> torch.Tensor:
            return self.problem.loss(self.backbone.functional(p, batch.support_x), batch.support_y)
        return loss

    def adapt(self, batch: TaskBatch, params: Params, steps: int, create_graph: bool) -> Params:
        start = {name: params[name].detach() for name in self.adapted_names}
        support_loss, strength = self.support_loss(batch), self.hparams.regularization

        def regularised(p: Params) -> torch.Tensor:
            proximal = sum((p[n] - start[n]).pow(2).flatten(1).sum(1) for n in self.adapted_names)
            return support_loss(p) + 0.5 * strength * proximal

        return sgd_steps(regularised, params, self.adapted_names, steps, float(self.hparams.inner_lr), create_graph)

    def implicit_gradients(self, batch: TaskBatch) -> tuple[Vectors, dict[str, torch.Tensor], torch.Tensor]:
        """Each task's implicit meta-gradient of the adapted parameters, the query loss's direct gradient
        of the shared ones (summed over tasks), and the per-task query losses."""
        names = self.adapted_names
        meta = self.backbone.params()
        params = {k: v.detach().clone().requires_grad_(k in names)
                  for k, v in per_task({k: v.detach() for k, v in meta.items()}, len(batch), names).items()}
        shared = [k for k in meta if k not in names]
        with torch.enable_grad():
            adapted = self.adapt(batch, params, self.hparams.inner_steps, create_graph=False)
            adapted = {k: (v.detach().requires_grad_(True) if k in names else meta[k]) for k, v in adapted.items()}
            query_losses = self.problem.loss(self.query_predictions(batch, adapted), batch.query_y)
            grads = torch.autograd.grad(query_losses.sum(), [adapted[n] for n in names] + [meta[k] for k in shared])
            support_grads = torch.autograd.grad(self.support_loss(batch)(adapted).sum(), [adapted[n] for n in names],
                                                create_graph=True)
            strength = self.hparams.regularization

            def apply(v: Vectors) -> Vectors:  # (I + H / lambda) v, every task at once
                hvp = torch.autograd.grad(support_grads, [adapted[n] for n in names], grad_outputs=v, retain_graph=True)
                return [vi + h / strength for vi, h in zip(v, hvp, strict=True)]

            solution = conjugate_gradient(apply, list(grads[: len(names)]), self.hparams.cg_steps)
        return solution, dict(zip(shared, grads[len(names):], strict=True)), query_losses.detach()

    def accumulate_meta_gradient(self, batch: TaskBatch) -> torch.Tensor:
        total = torch.zeros((), device=batch.query_x.device)
        meta = self.backbone.params()
        for chunk in self.task_chunks(batch):
            solution, shared, losses = self.implicit_gradients(chunk)
            contributions = {**dict(zip(self.adapted_names, (s.sum(0) for s in solution), strict=True)), **shared}
            for name, value in contributions.items():
                value = value / len(batch)
                param = meta[name]
                param.grad = value if param.grad is None else param.grad + value
            total = total + losses.sum() / len(batch)
        return total
