"""Nearest centroid on frozen sentence embeddings: the floor of the text suites, with nothing learned.

Nearest class mean: Mensink, Verbeek, Perronnin and Csurka, "Distance-Based Image Classification:
Generalizing to New Classes at Near-Zero Cost", TPAMI 2013. https://doi.org/10.1109/TPAMI.2013.83
Sentence embeddings: Reimers and Gurevych, "Sentence-BERT", EMNLP 2019. https://arxiv.org/abs/1908.10084
"""

from __future__ import annotations

import torch

from bench.algorithms.base import Algorithm, Hyperparameters, Problem, register
from bench.algorithms.protonet import class_means
from bench.config import Suite
from bench.tasks import TaskBatch


@register("centroid")
class NearestCentroid(Algorithm):
    """Nearest centroid (the floor): a query gets the class whose mean frozen sentence embedding is nearest; nothing is trained.

    The embeddings are all-MiniLM-L6-v2's, normalised, so the squared Euclidean distance ranks
    classes as cosine similarity does. Every text leaderboard shows each method against this
    number: a meta-learner that does not beat it has learned nothing the pre-trained encoder did
    not already know. It applies only with the frozen encoder (``encoder: minilm``).
    """

    family = "floor"
    task_types = frozenset({"classification"})
    Hparams = Hyperparameters
    learns = False

    def __init__(self, hparams: Hyperparameters, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)

    @classmethod
    def inapplicable(cls, suite: Suite) -> str | None:
        if not (suite.model.kind == "text" and suite.model.encoder == "minilm"):
            return "needs frozen sentence embeddings (a text suite with encoder: minilm); it is the floor shown beside them"
        return super().inapplicable(suite)

    def meta_train_step(self, batch: TaskBatch, iteration: int) -> torch.Tensor:
        return torch.zeros((), device=batch.query_x.device)  # nothing to learn

    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0

    @torch.no_grad()
    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        ways = self.problem.ways_of(batch)
        scores = -torch.cdist(batch.query_x, class_means(batch.support_x, batch.support_y, ways)).pow(2)
        return self.problem.metric(scores, batch.query_y)
