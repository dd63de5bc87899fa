"""Networks with a functional forward: parameters are passed in, optionally with a task dimension."""

from __future__ import annotations

import torch

from bench.config import Conv4Model, MLPModel
from bench.models.conv4 import Conv4
from bench.models.init import reset_parameters_
from bench.models.mlp import MLP


def build_backbone(
    config: MLPModel | Conv4Model, in_shape: tuple[int, ...], out_features: int, generator: torch.Generator
) -> MLP | Conv4:
    if isinstance(config, MLPModel):
        return MLP(in_shape[0], config.hidden, out_features, generator, config.activation)
    return Conv4(in_shape, config.filters, out_features, generator)


__all__ = ["MLP", "Conv4", "build_backbone", "reset_parameters_"]
