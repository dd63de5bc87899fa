"""learn2learn's MAML wrapper (``learn2learn.algorithms.MAML``), the reference for our MAML.
Finn, Abbeel and Levine, ICML 2017. https://arxiv.org/abs/1703.03400
"""

from __future__ import annotations

from typing import Any

import torch

from bench.algorithms.base import register
from bench.algorithms.l2l_reference import L2LReference


@register("maml.l2l")
class MAMLL2L(L2LReference):
    """MAML as implemented by learn2learn 0.2.0 (reference variant of ``maml``): one task at a time through ``MAML.clone``/``adapt``."""

    def wrap(self, l2l: Any, model: torch.nn.Module) -> torch.nn.Module:
        return l2l.algorithms.MAML(model, lr=self.hparams.inner_lr, first_order=self.hparams.first_order)
