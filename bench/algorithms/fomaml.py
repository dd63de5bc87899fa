"""First-order MAML: Finn, Abbeel and Levine, ICML 2017, section 5.2 ("first-order approximation").
https://arxiv.org/abs/1703.03400
"""

from __future__ import annotations

from bench.algorithms.base import register
from bench.algorithms.maml import MAML, MAMLHparams


class FOMAMLHparams(MAMLHparams):
    first_order: bool = True


@register("fomaml")
class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017): MAML without the second-order terms; the query gradient at the adapted weights is the meta-gradient."""

    Hparams = FOMAMLHparams
    hparams: FOMAMLHparams
