"""The inner loop shared by the gradient-based algorithms (MAML, FOMAML, Meta-SGD, ANIL, Reptile).

The tasks of a chunk adapt together: the meta-parameters are expanded to one copy per task
(a leading task dimension), the per-task losses are summed, and one ``autograd.grad`` call then
yields every task's own gradient, because the tasks do not interact. Second-order terms flow
through ``create_graph=True``; first-order variants pass ``create_graph=False`` so the adapted
parameters depend on the meta-parameters only through the identity.

A meta-batch is processed ``task_chunk`` tasks at a time (``bench/run/execution.py`` chooses the size
per device by measurement): each chunk's meta-loss is back-propagated before the next chunk is
built, so one chunk's graph is alive at a time. Chunk 1 is the per-task loop; chunk B is every
task in one grouped call. The meta-gradient is the same up to rounding for every chunk size
(tests/algorithms/test_gradient_paths.py checks each against learn2learn in float64).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from bench.algorithms.base import Algorithm, Hyperparameters, Problem
from bench.models.mlp import Params
from bench.tasks import TaskBatch

EVAL_CHUNK = 200  # the most tasks adapted at once during evaluation; bounds memory on large test sets


def per_task(params: Params, n_tasks: int, names: Iterable[str] | None = None) -> Params:
    """Expand ``names`` (all when None) to one copy per task; the rest stay shared."""
    names = set(params) if names is None else set(names)
    return {k: v.unsqueeze(0).expand(n_tasks, *v.shape) if k in names else v for k, v in params.items()}


def sgd_steps(
    loss_fn: Callable[[Params], torch.Tensor],
    params: Params,
    names: tuple[str, ...],
    steps: int,
    lr: float | Mapping[str, torch.Tensor],
    create_graph: bool,
    checkpointed: bool = False,
) -> Params:
    """``steps`` gradient steps on ``names``; ``loss_fn(params)`` returns per-task losses (B,).

    ``checkpointed``: keep only each step's adapted parameters and recompute the step's graph
    during the outer backward pass (``torch.utils.checkpoint``), so the memory of a second-order
    meta-gradient stops growing with the number of steps; the result is the same.
    """

    def step(params: Params) -> Params:
        loss = loss_fn(params).sum()
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        params = dict(params)
        for name, grad in zip(names, grads, strict=True):
            step_size = lr if isinstance(lr, float) else lr[name]
            params[name] = params[name] - step_size * grad
        return params

    keys = tuple(params)
    for _ in range(steps):
        if checkpointed and create_graph:
            values = checkpoint(lambda *v: tuple(step(dict(zip(keys, v, strict=True))).values()), *params.values(),
                                use_reentrant=False)
            params = dict(zip(keys, values, strict=True))
        else:
            params = step(params)
    return params


class GradientBased(Algorithm):
    """Adapts the backbone's parameters (or the subset ``adapted_names``) by gradient steps."""

    family = "gradient-based"
    task_types = frozenset({"regression", "classification"})
    checkpoint_inner_steps: bool = False
    eval_chunk: int | None = None  # tasks adapted together at test time (None: EVAL_CHUNK); set from the run's execution

    hparams: Any  # each subclass's own Hparams (MAML's, Reptile's, Transfer's), which share no base

    def __init__(self, hparams: Hyperparameters, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.backbone = problem.build_backbone(generator)

    @property
    def adapted_names(self) -> tuple[str, ...]:
        """The parameters adapted per task: all but those the backbone keeps shared (the word-CNN's embeddings)."""
        shared = getattr(self.backbone, "task_shared_names", ())
        return tuple(n for n in self.backbone.params() if n not in shared)

    def inner_lr(self) -> float | Mapping[str, torch.Tensor]:
        return float(self.hparams.inner_lr)

    def adapt(self, batch: TaskBatch, params: Params, steps: int, create_graph: bool) -> Params:
        problem, model = self.problem, self.backbone
        support_x = batch.support_x
        if not set(self.adapted_names) & set(getattr(model, "task_shared_names", ())):
            # The steps change only adapted parameters, so what reads the others alone (the fine-tuned
            # transformer) is computed once, not at every step: the same values, the same graph.
            support_x = model.shared_encoding(params, support_x)

        def support_loss(p: Params) -> torch.Tensor:
            return problem.loss(model.functional(p, support_x), batch.support_y)

        return sgd_steps(support_loss, params, self.adapted_names, steps, self.inner_lr(), create_graph,
                         self.checkpoint_inner_steps)

    def query_predictions(self, batch: TaskBatch, adapted: Params) -> torch.Tensor:
        if not self.inductive:
            return self.backbone.functional(adapted, batch.query_x)
        _, query = self.embed_episode(adapted, batch)  # the support images only give the batch-norm statistics
        return self.backbone.head(adapted, query)

    @classmethod
    def chunks_evaluation(cls) -> bool:
        """Whether test-time adaptation is this class's, chunked by ``eval_chunk``."""
        return cls.evaluate is GradientBased.evaluate

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        results = []
        size = min(self.eval_chunk or EVAL_CHUNK, EVAL_CHUNK)
        for chunk in (batch.slice(start, start + size) for start in range(0, len(batch), size)):
            meta = {k: v.detach() for k, v in self.backbone.params().items()}
            params = per_task(meta, len(chunk), self.adapted_names)
            params = {k: v.clone().requires_grad_(k in self.adapted_names) for k, v in params.items()}
            with torch.enable_grad():
                adapted = self.adapt(chunk, params, inner_steps, create_graph=False)
            with torch.no_grad():
                results.append(self.problem.metric(self.query_predictions(chunk, adapted), chunk.query_y))
        return torch.cat(results)
