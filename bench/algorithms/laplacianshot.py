"""LaplacianShot: Ziko, Dolz, Granger and Ben Ayed, "Laplacian Regularized Few-Shot Learning", ICML 2020.
https://arxiv.org/abs/2006.15486
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Search, register
from bench.algorithms.protonet import class_means
from bench.algorithms.simpleshot import SimpleShot, transformed
from bench.tasks import TaskBatch


class LaplacianShotHparams(Hyperparameters):
    # Pre-training and features as SimpleShot's (its lr, transform and mean_decay).
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    transform: Literal["CL2N", "L2N", "UN"] = "CL2N"
    mean_decay: float = Field(default=0.99, ge=0.0, lt=1.0)
    # easyfsl's defaults (tuned there for mini-ImageNet 5-way 5-shot), which the equivalence test runs.
    # knn counts the query itself, as easyfsl's does: 3 keeps each query's two nearest other queries.
    knn: Annotated[int, Field(ge=2), Search(2, 10)] = 3
    lambda_regularization: Annotated[float, Field(ge=0.0), Search(0.1, 2.0)] = 0.7
    inference_steps: Annotated[int, Field(ge=1, le=1000)] = 20


def cosine(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    return F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).transpose(1, 2)


def rectified_prototypes(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """BD-CSPN's prototype rectification (Liu et al. 2020), as LaplacianShot's code takes it: the queries
    shifted onto the support set's mean, then each class prototype a weighted mean of its support
    features and of the queries predicted in it, weights exp(cosine to the class means)."""
    prototypes = class_means(support, labels, ways)
    shifted = query + (support.mean(1, keepdim=True) - query.mean(1, keepdim=True))
    support_one_hot = F.one_hot(labels, ways).to(support.dtype)
    support_weights = support_one_hot * cosine(support, prototypes).exp()
    query_logits = cosine(shifted, prototypes).exp()
    query_weights = F.one_hot(query_logits.argmax(-1), ways).to(support.dtype) * query_logits
    normalisation = (support_weights.sum(1) + query_weights.sum(1)).unsqueeze(1)  # (B, 1, ways)
    return ((support_weights / normalisation).transpose(1, 2) @ support
            + (query_weights / normalisation).transpose(1, 2) @ shifted)


def laplacian_assignments(query: torch.Tensor, prototypes: torch.Tensor, knn: int, strength: float,
                          steps: int) -> torch.Tensor:
    """Soft assignments (B, n_query, ways) by the paper's bound updates (Algorithm 1): minimise the squared
    distances to the prototypes plus ``strength`` times the Laplacian term over each query's k nearest
    queries. Each task stops when its bound changes by at most 1e-6 relative (from the third step); the
    tasks run together, and a stopped task keeps its assignments (no host-device sync for the test)."""
    distances = torch.cdist(query, prototypes) ** 2
    neighbours = torch.cdist(query, query).topk(knn, largest=False).indices[..., 1:]
    kernel = torch.zeros(query.shape[0], query.shape[1], query.shape[1], dtype=query.dtype, device=query.device)
    kernel.scatter_(2, neighbours, 1.0)
    assignments = (-distances).softmax(-1)
    running = torch.ones(query.shape[0], dtype=torch.bool, device=query.device)
    previous = torch.full((query.shape[0],), float("inf"), dtype=query.dtype, device=query.device)
    for step in range(steps):
        updated = (-distances + strength * kernel @ assignments).softmax(-1)
        assignments = torch.where(running.view(-1, 1, 1), updated, assignments)
        bound = (assignments * (assignments + 1e-12).log() + distances * assignments
                 - strength * (kernel @ assignments) * assignments).sum((1, 2))
        if step > 1:
            running = running & ((bound - previous).abs() > 1e-6 * previous.abs())
        previous = bound
    return assignments


@register("laplacianshot")
class LaplacianShot(SimpleShot):
    """LaplacianShot (Ziko et al. 2020): pre-train the backbone as SimpleShot does, then assign each task's queries to rectified prototypes with a Laplacian term that pulls neighbouring queries to the same class (transductive).

    The pre-training and the feature transform (CL2N) are SimpleShot's. At test time the
    prototypes are rectified as in BD-CSPN (the queries, shifted onto the support mean, join their
    predicted classes), a k-nearest-neighbour graph links the queries, and the soft assignments
    follow the paper's bound updates until the bound stops moving; a query's class is its largest
    assignment. easyfsl's formulation and defaults (equal to easyfsl's LaplacianShot on the same
    features, tested). Transductive: it runs on suites with ``inference: transductive`` only.
    """

    Hparams = LaplacianShotHparams  # type: ignore[assignment]
    hparams: LaplacianShotHparams  # type: ignore[assignment]
    inference = "transductive"

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        transform, ways = self.hparams.transform, self.problem.ways_of(batch)
        with torch.no_grad():
            support, query = transformed(*self.embed_episode(self.backbone.params(), batch),
                                         self.base_mean() if transform == "CL2N" else None, transform != "UN")
            prototypes = rectified_prototypes(support, batch.support_y, query, ways)
            assignments = laplacian_assignments(query, prototypes, self.hparams.knn,
                                                self.hparams.lambda_regularization, self.hparams.inference_steps)
            return self.problem.metric(assignments, batch.query_y)
