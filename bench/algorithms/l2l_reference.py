"""learn2learn's own MAML-family wrappers, run as reference variants of ours.

Arnold, Mahajan, Datta, Bunner and Zarkias, "learn2learn: A Library for Meta-Learning Research",
2020. https://arxiv.org/abs/2008.12284
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from typing import Any

import torch

from bench.algorithms.base import Algorithm, Problem
from bench.algorithms.maml import MAMLHparams
from bench.config import Suite
from bench.errors import BenchError
from bench.tasks import TaskBatch

INSTALL_HINT = "install it with `python tools/install_learn2learn.py` (tox and .ci/run do this for you)"


def learn2learn_available() -> bool:
    return importlib.util.find_spec("learn2learn") is not None


def import_learn2learn() -> Any:
    if not learn2learn_available():
        raise BenchError(f"learn2learn is not installed; {INSTALL_HINT}")
    # learn2learn imports gym 0.26, which prints a NumPy 2 banner to stderr; bench uses no gym code.
    with contextlib.redirect_stderr(io.StringIO()):
        import learn2learn

    return learn2learn


class L2LReference(Algorithm):
    """Wraps a learn2learn meta-learner; tasks are adapted one at a time, as in learn2learn's examples."""

    family = "gradient-based"
    task_types = frozenset({"regression", "classification"})
    Hparams = MAMLHparams
    hparams: MAMLHparams
    inductive_batch_norm = False  # learn2learn's modules normalise with the statistics of whatever they are given
    supports_task_chunks = False  # the reference runs as learn2learn's examples do, whatever the execution options
    learner: Any  # learn2learn's MAML or MetaSGD wrapper (learn2learn has no type hints)

    def __init__(self, hparams: MAMLHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.backbone = problem.build_backbone(generator)
        self.learner = self.wrap(import_learn2learn(), self.backbone)
        self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=hparams.outer_lr)

    @classmethod
    def inapplicable(cls, suite: Suite) -> str | None:
        if suite.model.kind == "text" and suite.model.encoder == "wordcnn" and not suite.model.adapt_embeddings:
            return ("learn2learn's wrapper adapts every parameter, and this suite keeps the word embeddings shared "
                    "across tasks (set model.adapt_embeddings: true to compare)")
        if suite.model.kind == "text" and suite.model.encoder == "minilm-finetune":
            return ("learn2learn's wrapper adapts every parameter per task, second order, and PyTorch's CPU attention "
                    "backward has no derivative of its own (measured: it fails); bench shares the transformer across tasks")
        return super().inapplicable(suite) or (None if learn2learn_available() else
                                               "not available here (learn2learn is not installed)")

    def wrap(self, l2l: Any, model: torch.nn.Module) -> torch.nn.Module:
        raise NotImplementedError

    def adapted_clone(self, support_x: torch.Tensor, support_y: torch.Tensor, steps: int) -> torch.nn.Module:
        learner = self.learner.clone()
        for _ in range(steps):
            learner.adapt(self.problem.loss(learner(support_x[None]), support_y[None]).sum())
        return learner

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        losses = []
        for task in range(len(batch)):
            learner = self.adapted_clone(batch.support_x[task], batch.support_y[task], self.hparams.inner_steps)
            losses.append(self.problem.loss(learner(batch.query_x[task][None]), batch.query_y[task][None]))
        return torch.cat(losses).mean()

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        results = []
        for task in range(len(batch)):
            learner = self.adapted_clone(batch.support_x[task], batch.support_y[task], inner_steps)
            with torch.no_grad():
                results.append(self.problem.metric(learner(batch.query_x[task][None]), batch.query_y[task][None]))
        return torch.cat(results)
