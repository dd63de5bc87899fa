"""ProtoMAML: Triantafillou et al., "Meta-Dataset: A Dataset of Datasets for Learning to Learn from Few
Examples", ICLR 2020. https://arxiv.org/abs/1903.03096
"""

from __future__ import annotations

import torch

from bench.algorithms.base import register
from bench.algorithms.gradient import EVAL_CHUNK, per_task
from bench.algorithms.maml import MAML
from bench.algorithms.protonet import class_means
from bench.models.base import Params
from bench.tasks import TaskBatch


@register("protomaml")
class ProtoMAML(MAML):
    """ProtoMAML (Triantafillou et al. 2020): MAML whose output layer starts each task as the prototypical classifier of its support set (weights 2 c_k, biases -|c_k|^2).

    With c_k the mean support feature of class k under the current parameters, the initial head
    scores a query q as 2 c_k.q - |c_k|^2 = -|q - c_k|^2 + |q|^2: ProtoNet's scores up to a
    per-query constant, so with no inner step it predicts as ProtoNet does (tested). The inner loop
    then adapts every parameter, head included, as MAML's. The head is computed from the body, so
    the first inner step's gradient of the body includes the path through the prototypes, and
    the meta-gradient flows through them too (second order unless ``first_order``, as the paper's
    fo-Proto-MAML). The prototypes use the support images alone, as the support loss does.
    """

    task_types = frozenset({"classification"})

    def prototype_head(self, batch: TaskBatch, params: Params) -> Params:
        """``params`` with each task's head set from its support set's class means."""
        weight_name, bias_name = self.backbone.head_names
        features = self.backbone.features(params, batch.support_x)
        prototypes = class_means(features, batch.support_y, self.problem.ways_of(batch))  # (B, ways, d)
        return {**params, weight_name: 2.0 * prototypes, bias_name: -prototypes.pow(2).sum(-1)}

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        params = self.prototype_head(batch, per_task(self.backbone.params(), len(batch), self.adapted_names))
        adapted = self.adapt(batch, params, self.hparams.inner_steps, create_graph=not self.hparams.first_order)
        return self.problem.loss(self.query_predictions(batch, adapted), batch.query_y).mean()

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        results = []
        size = min(self.eval_chunk or EVAL_CHUNK, EVAL_CHUNK)
        for chunk in (batch.slice(start, start + size) for start in range(0, len(batch), size)):
            meta = {k: v.detach() for k, v in self.backbone.params().items()}
            params = {k: v.clone().requires_grad_(k in self.adapted_names)
                      for k, v in per_task(meta, len(chunk), self.adapted_names).items()}
            with torch.enable_grad():
                params = self.prototype_head(chunk, params)
                adapted = self.adapt(chunk, params, inner_steps, create_graph=False)
            with torch.no_grad():
                results.append(self.problem.metric(self.query_predictions(chunk, adapted), chunk.query_y))
        return torch.cat(results)
