"""ANIL: Raghu, Raghu, Bengio and Vinyals, "Rapid Learning or Feature Reuse? Towards Understanding
the Effectiveness of MAML", ICLR 2020. https://arxiv.org/abs/1909.09157
"""

from __future__ import annotations

import torch

from bench.algorithms.base import register
from bench.algorithms.gradient import sgd_steps
from bench.algorithms.maml import MAML, MAMLHparams
from bench.models.mlp import Params
from bench.tasks import TaskBatch


@register("anil")
class ANIL(MAML):
    """ANIL (Raghu et al. 2020): MAML that adapts only the head in the inner loop; the body is meta-learned and shared.

    The body's features are computed once per task, since the inner loop cannot change them.
    """

    Hparams = MAMLHparams
    hparams: MAMLHparams

    @property
    def adapted_names(self) -> tuple[str, ...]:
        return self.backbone.head_names

    def adapt(self, batch: TaskBatch, params: Params, steps: int, create_graph: bool) -> Params:
        features = self.backbone.features(params, batch.support_x)

        def support_loss(p: Params) -> torch.Tensor:
            return self.problem.loss(self.backbone.head(p, features), batch.support_y)

        return sgd_steps(support_loss, params, self.adapted_names, steps, self.inner_lr(), create_graph)
