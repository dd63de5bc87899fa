"""BOIL: Oh, Yoo, Kim and Yun, "BOIL: Towards Representation Change for Few-shot Learning", ICLR 2021.
https://arxiv.org/abs/2008.08882
"""

from __future__ import annotations

from bench.algorithms.base import register
from bench.algorithms.maml import MAML, MAMLHparams


@register("boil")
class BOIL(MAML):
    """BOIL (Oh et al. 2021): MAML that adapts only the body in the inner loop; the head is meta-learned and kept fixed per task, ANIL's opposite.

    The outer loop updates every parameter, as MAML's. The paper's default keeps the head's inner
    learning rate at zero, which is what adapting the body alone does; its choice of where the
    head starts (from zeros, or learned) is ours as MAML's (learned).
    """

    Hparams = MAMLHparams
    hparams: MAMLHparams

    @property
    def adapted_names(self) -> tuple[str, ...]:
        head = set(self.backbone.head_names)
        return tuple(name for name in super().adapted_names if name not in head)
