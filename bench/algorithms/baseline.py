"""Baseline and Baseline++: Chen, Liu, Kira, Wang and Huang, "A Closer Look at Few-shot
Classification", ICLR 2019. https://arxiv.org/abs/1904.04232
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import (
    Algorithm,
    Hyperparameters,
    LearningRate,
    Problem,
    Search,
    per_task_cross_entropy,
    register,
)
from bench.config import MAX_STEPS
from bench.errors import BenchError
from bench.tasks import TaskBatch

# The reference code's fine-tuning optimizer: SGD, momentum 0.9, dampening 0.9, weight decay 1e-3.
FINETUNE_MOMENTUM = 0.9
FINETUNE_DAMPENING = 0.9
FINETUNE_WEIGHT_DECAY = 0.001


class BaselineHparams(Hyperparameters):
    lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001
    finetune_steps: int = Field(default=100, ge=0, le=MAX_STEPS)
    finetune_lr: Annotated[float, Field(gt=0.0), Search(1e-3, 1.0, log=True)] = 0.1


class BaselinePPHparams(BaselineHparams):
    scale: float | None = Field(default=None, gt=0.0)


def reference_scale(n_classes: int) -> float:
    """Baseline++'s cosine scale in the reference code: 2 for at most 200 classes, else 10."""
    return 2.0 if n_classes <= 200 else 10.0


@register("baseline")
class Baseline(Algorithm):
    """Baseline (Chen et al. 2019): pre-train the backbone with a linear classifier over all training classes, then fine-tune a new linear classifier on each test task's support set, features frozen.

    Pre-training draws its images from training episodes (support and query sets pooled) and
    labels them by their class in the training split (``TaskBatch.support_classes``); the paper
    uses ordinary mini-batches of the training classes. Test tasks adapt as in the paper: the
    features are computed once (support and query images of an episode together, so batch norm
    uses the episode's statistics; inductive: its support set's), then a new classifier is trained
    on the support features for ``finetune_steps`` steps of SGD with the reference code's momentum
    and weight decay. The steps are full-batch (the reference code takes mini-batches of 4 in
    shuffled order for 100 epochs), all tasks at once, each from the same initial classifier, drawn
    at construction as ``nn.Linear`` draws it.
    """

    family = "transfer"
    task_types = frozenset({"classification"})
    finetune_weight: torch.Tensor  # buffers: the fine-tuned classifier's initialisation
    finetune_bias: torch.Tensor | None
    Hparams = BaselineHparams
    hparams: BaselineHparams
    cosine: ClassVar[bool] = False  # Baseline++: a cosine classifier, without bias

    def __init__(self, hparams: BaselineHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        if problem.n_train_classes is None:
            raise BenchError(f"{self.name} pre-trains over all training classes, and this task source does not name them")
        self.backbone = problem.build_backbone(generator)
        dim = self.backbone.feature_dim
        bound = 1.0 / math.sqrt(dim)  # nn.Linear's initialisation, from ``generator``

        def uniform(*shape: int) -> torch.Tensor:
            return torch.empty(shape).uniform_(-bound, bound, generator=generator)

        self.classifier_weight = torch.nn.Parameter(uniform(problem.n_train_classes, dim))
        self.classifier_bias = None if self.cosine else torch.nn.Parameter(uniform(problem.n_train_classes))
        self.register_buffer("finetune_weight", uniform(problem.out_features, dim))
        self.register_buffer("finetune_bias", None if self.cosine else uniform(problem.out_features))
        self.optimizer = torch.optim.Adam(self.parameters(), lr=hparams.lr)

    def protocol_shaped_state(self) -> tuple[str, ...]:
        # The backbone's own head is unused (the classifiers are apart); each episode fine-tunes from the fixed draw.
        return (*(f"backbone.{name}" for name in self.backbone.head_names), "finetune_weight", "finetune_bias")

    def classify(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Scores (B, n, classes) of features (B, n, d) by weight (classes, d) or (B, classes, d)."""
        scores = features @ weight.transpose(-1, -2)
        return scores if bias is None else scores + bias.unsqueeze(-2)

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        if batch.support_classes is None or batch.query_classes is None:
            raise BenchError(f"{self.name} needs each training example's class (TaskBatch.support_classes)")
        x = torch.cat([batch.support_x, batch.query_x], dim=1)
        classes = torch.cat([batch.support_classes, batch.query_classes], dim=1)
        features = self.backbone.features(self.backbone.params(), x)
        self.observe_pretraining_features(features)
        logits = self.classify(features, self.classifier_weight, self.classifier_bias)
        return F.cross_entropy(logits.flatten(0, 1), classes.flatten())

    def observe_pretraining_features(self, features: torch.Tensor) -> None:
        """Each pre-training batch's features (B, n, d), for methods that keep statistics of them (SimpleShot's mean)."""

    def evaluation_steps(self, protocol_steps: int) -> int:
        return self.hparams.finetune_steps

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        tasks = len(batch)
        with torch.no_grad():
            support, query = self.embed_episode(self.backbone.params(), batch)
        # One classifier per task (a leading task dimension): the summed loss gives each task its
        # own gradient, and SGD's momentum and weight decay act elementwise, so tasks stay independent.
        weight = self.finetune_weight.expand(tasks, -1, -1).clone().requires_grad_()
        bias = None if self.finetune_bias is None else self.finetune_bias.expand(tasks, -1).clone().requires_grad_()
        optimizer = torch.optim.SGD([p for p in (weight, bias) if p is not None], lr=self.hparams.finetune_lr,
                                    momentum=FINETUNE_MOMENTUM, dampening=FINETUNE_DAMPENING,
                                    weight_decay=FINETUNE_WEIGHT_DECAY)
        with torch.enable_grad():
            for _ in range(inner_steps):
                optimizer.zero_grad(set_to_none=True)
                per_task_cross_entropy(self.classify(support, weight, bias), batch.support_y).sum().backward()
                optimizer.step()
        with torch.no_grad():
            return self.problem.metric(self.classify(query, weight, bias), batch.query_y)


@register("baselinepp")
class BaselinePP(Baseline):
    """Baseline++ (Chen et al. 2019): Baseline with a cosine-similarity classifier, scores = scale * cos(feature, class weight), for pre-training and fine-tuning.

    ``scale`` None follows the reference code: 2 for at most 200 classes, else 10 (so 10 when
    pre-training over Omniglot's 4112 training classes, 2 when fine-tuning on 5 ways). The
    reference code also learns each class weight's norm (weight normalisation); here the weights
    are normalised, as the paper describes.
    """

    Hparams = BaselinePPHparams
    hparams: BaselinePPHparams
    cosine = True

    def protocol_shaped_state(self) -> tuple[str, ...]:
        # The backbone's own head is unused (the classifiers are apart); each episode fine-tunes from the fixed draw.
        return (*(f"backbone.{name}" for name in self.backbone.head_names), "finetune_weight", "finetune_bias")

    def classify(self, features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        scale = self.hparams.scale or reference_scale(weight.shape[-2])
        return scale * F.normalize(features, dim=-1) @ F.normalize(weight, dim=-1).transpose(-1, -2)
