"""What the per-support-set baselines on a pre-trained sentence encoder share (``finetune``, ``setfit``).

They meta-train nothing: each test task starts from all-MiniLM-L6-v2's weights and trains on its
own support set only, as a practitioner with a handful of labelled texts would. With
``encoder: minilm-finetune`` the suite's ``finetune_layers`` top layers adapt per task (the lower,
frozen layers run once per task, ``MiniLMEncoder.lower``); with the frozen ``encoder: minilm`` the
inputs are the cached embeddings and only what sits above them trains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from bench.algorithms.base import Algorithm, Hyperparameters, Problem
from bench.config import Suite, TextModel
from bench.models.base import Params
from bench.models.minilm import MiniLMEncoder
from bench.tasks import TaskBatch

Embed = Callable[[Params], torch.Tensor]  # a task's trainable encoder tensors -> its texts' (n, 384) embeddings


class SentenceEncoderBaseline(Algorithm):
    """Adapts a fresh copy of the pre-trained encoder's trainable layers to each task, one task at a time."""

    family = "transfer"
    task_types = frozenset({"classification"})
    learns = False
    supports_task_chunks = False
    encoders: ClassVar[frozenset[str]] = frozenset({"minilm", "minilm-finetune"})

    def __init__(self, hparams: Hyperparameters, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        model = problem.suite.model
        trainable = isinstance(model, TextModel) and model.encoder == "minilm-finetune"
        self.encoder = MiniLMEncoder(model.finetune_layers, model.pooling) if isinstance(model, TextModel) and trainable else None

    @classmethod
    def inapplicable(cls, suite: Suite) -> str | None:
        if suite.model.kind != "text" or suite.model.encoder not in cls.encoders:
            encoders = " or ".join(f"encoder: {name}" for name in sorted(cls.encoders))
            return f"adapts the pre-trained sentence encoder to each support set (a text suite with {encoders})"
        return super().inapplicable(suite)

    def meta_train_step(self, batch: TaskBatch, iteration: int) -> torch.Tensor:
        return torch.zeros((), device=batch.query_x.device)  # nothing is meta-trained

    def initial_encoder(self) -> Params:
        """A fresh, trainable copy of the encoder's trainable tensors (none with the frozen encoder)."""
        if self.encoder is None:
            return {}
        return {name: p.detach().clone().requires_grad_() for name, p in self.encoder.named_parameters()}

    def embedder(self, x: torch.Tensor) -> Embed:
        """One task's inputs (n, L) word-piece ids or (n, 384) frozen embeddings -> its embedding function."""
        if self.encoder is None:
            return lambda params: x
        encoder, states = self.encoder, self.encoder.lower(x)
        return lambda params: encoder.upper(params, states)

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        ways = self.problem.ways_of(batch)
        scores = [self.adapt_and_score(batch.support_x[t], batch.support_y[t], batch.query_x[t], ways, inner_steps)
                  for t in range(len(batch))]
        return self.problem.metric(torch.stack(scores), batch.query_y)

    def adapt_and_score(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                        ways: int, steps: int) -> torch.Tensor:
        """Train on one task's support set; its query set's class scores (n_query, ways)."""
        raise NotImplementedError
