"""SimpleShot: Wang, Chao, Weinberger and van der Maaten, "SimpleShot: Revisiting Nearest-Neighbor
Classification for Few-Shot Learning", arXiv 2019. https://arxiv.org/abs/1911.04623
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Problem, Search, register
from bench.algorithms.baseline import Baseline
from bench.algorithms.protonet import class_means
from bench.tasks import TaskBatch


class SimpleShotHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    # The paper's three feature transforms: none (UN), L2 normalisation (L2N), centring on the
    # training classes' mean feature then L2 normalisation (CL2N, its best).
    transform: Annotated[Literal["CL2N", "L2N", "UN"], Search(choices=("CL2N", "L2N", "UN"))] = "CL2N"
    # The paper measures Euclidean distance to the class centroids; easyfsl's SimpleShot, cosine.
    distance: Literal["euclidean", "cosine"] = "euclidean"
    mean_decay: float = Field(default=0.99, ge=0.0, lt=1.0)


def transformed(support: torch.Tensor, query: torch.Tensor, centre: torch.Tensor | None,
                normalise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's feature transforms of (B, n, d) features: less ``centre`` (CL2N), then L2-normalised if ``normalise``."""
    if centre is not None:
        support, query = support - centre, query - centre
    if normalise:
        support, query = F.normalize(support, dim=-1), F.normalize(query, dim=-1)
    return support, query


def nearest_centroid_scores(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
                            centre: torch.Tensor | None, normalise: bool, distance: str) -> torch.Tensor:
    """Scores (B, n_query, ways): features (B, n, d) transformed (``transformed``), then minus the
    Euclidean distance to each class centroid of the support features, or the cosine to it."""
    support, query = transformed(support, query, centre, normalise)
    centroids = class_means(support, labels, ways)
    if distance == "cosine":
        return F.normalize(query, dim=-1) @ F.normalize(centroids, dim=-1).transpose(1, 2)
    return -torch.cdist(query, centroids)


@register("simpleshot")
class SimpleShot(Baseline):
    """SimpleShot (Wang et al. 2019): pre-train the backbone with a linear classifier over all training classes, then classify each query by its nearest class centroid of transformed support features.

    Pre-training is Baseline's (cross-entropy over the training classes, on images drawn from
    training episodes). The transform (``transform``) is the paper's CL2N by default: subtract the
    mean feature of the training classes, then L2-normalise. That mean is kept during pre-training
    as a bias-corrected exponential moving average (``mean_decay``) of each meta-batch's mean
    feature under the current weights, and is part of the selected state; the paper averages the
    whole training set once with the final weights. No step is taken at test time.
    """

    Hparams = SimpleShotHparams  # type: ignore[assignment]  # SimpleShot fine-tunes nothing: Baseline's other fields do not apply
    hparams: SimpleShotHparams  # type: ignore[assignment]
    feature_sum: torch.Tensor
    weight_sum: torch.Tensor
    # The moving mean is of each whole meta-batch: split into task chunks (a speed choice) it would change.
    supports_task_chunks = False

    def __init__(self, hparams: SimpleShotHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)  # type: ignore[arg-type]
        self.register_buffer("feature_sum", torch.zeros(self.backbone.feature_dim))
        self.register_buffer("weight_sum", torch.zeros(()))

    def base_mean(self) -> torch.Tensor:
        """The training classes' mean feature (zero before any training step, where CL2N is L2N);
        computed on the device, without asking the host to look at the count."""
        return self.feature_sum / self.weight_sum.clamp_min(1.0)

    def observe_pretraining_features(self, features: torch.Tensor) -> None:
        with torch.no_grad():
            decay = self.hparams.mean_decay
            self.feature_sum.mul_(decay).add_(features.detach().flatten(0, 1).mean(0))
            self.weight_sum.mul_(decay).add_(1.0)

    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        transform = self.hparams.transform
        with torch.no_grad():
            support, query = self.embed_episode(self.backbone.params(), batch)
            scores = nearest_centroid_scores(support, batch.support_y, query, self.problem.ways_of(batch),
                                             self.base_mean() if transform == "CL2N" else None, transform != "UN",
                                             self.hparams.distance)
            return self.problem.metric(scores, batch.query_y)
