"""Meta-SGD: Li, Zhou, Chen and Li, "Meta-SGD: Learning to Learn Quickly for Few-Shot Learning",
2017. https://arxiv.org/abs/1707.09835
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from pydantic import model_validator
from torch import nn

from bench.algorithms.base import StepSize, register
from bench.algorithms.maml import MAML, MAMLHparams


class MetaSGDHparams(MAMLHparams):
    inner_lr: StepSize = 0.01  # unused (the learned rates replace it), so not tuned
    # The paper draws each initial learning rate from U[0.005, 0.1].
    lr_init_low: StepSize = 0.005
    lr_init_high: StepSize = 0.1

    @model_validator(mode="after")
    def _ordered(self) -> MetaSGDHparams:
        if self.lr_init_low > self.lr_init_high:
            raise ValueError(f"lr_init_low ({self.lr_init_low}) must not exceed lr_init_high ({self.lr_init_high})")
        return self


@register("metasgd")
class MetaSGD(MAML):
    """Meta-SGD (Li et al. 2017): MAML that also meta-learns one inner learning rate per weight (a vector, same shape as the weights).

    ``inner_lr`` is unused: the learned rates replace it. The rates are fitted to the number of
    inner steps it trains with, so it adapts with that many steps at test time too, as in the
    paper (records say so). Taking the protocol's 10 steps with rates learned for one diverges
    (measured on sine K=10 after 3000 iterations: validation MSE 0.30 at 1 step, inf at 5).
    """

    Hparams = MetaSGDHparams
    hparams: MetaSGDHparams

    def add_meta_parameters(self, generator: torch.Generator) -> None:
        low, high = self.hparams.lr_init_low, self.hparams.lr_init_high
        self.learned_lrs = nn.ParameterDict()
        for name, param in self.backbone.named_parameters():
            rates = torch.empty_like(param).uniform_(low, high, generator=generator)
            self.learned_lrs[name.replace(".", "/")] = nn.Parameter(rates)

    def evaluation_steps(self, protocol_steps: int) -> int:
        return self.hparams.inner_steps

    def inner_lr(self) -> Mapping[str, torch.Tensor]:
        return {name.replace("/", "."): rate for name, rate in self.learned_lrs.items()}
