"""learn2learn's Meta-SGD wrapper (``learn2learn.algorithms.MetaSGD``), the reference for our
Meta-SGD. Li, Zhou, Chen and Li, 2017. https://arxiv.org/abs/1707.09835
"""

from __future__ import annotations

from typing import Any

import torch

from bench.algorithms.base import register
from bench.algorithms.l2l_reference import L2LReference


@register("metasgd.l2l")
class MetaSGDL2L(L2LReference):
    """Meta-SGD as implemented by learn2learn 0.2.0 (reference variant of ``metasgd``): every learned rate starts at ``inner_lr``."""

    def evaluation_steps(self, protocol_steps: int) -> int:
        return self.hparams.inner_steps  # as ``metasgd``: the learned rates fit the training steps

    def wrap(self, l2l: Any, model: torch.nn.Module) -> torch.nn.Module:
        return l2l.algorithms.MetaSGD(model, lr=self.hparams.inner_lr, first_order=self.hparams.first_order)
