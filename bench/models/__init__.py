"""Networks with a functional forward: parameters are passed in, optionally with a task dimension."""

from __future__ import annotations

import torch

from bench.config import Conv4Model, MLPModel, ResNet12Model, TextModel
from bench.models.conv4 import Conv4
from bench.models.init import reset_parameters_
from bench.models.mlp import MLP
from bench.models.resnet12 import ResNet12
from bench.models.text import TextNet


def build_backbone(
    config: MLPModel | Conv4Model | ResNet12Model | TextModel, in_shape: tuple[int, ...], out_features: int,
    generator: torch.Generator,
) -> MLP | Conv4 | ResNet12 | TextNet:
    if isinstance(config, MLPModel):
        return MLP(in_shape[0], config.hidden, out_features, generator, config.activation)
    if isinstance(config, TextModel):
        return TextNet(config, in_shape, out_features, generator)
    if isinstance(config, ResNet12Model):
        return ResNet12(in_shape, config.channels, out_features, generator)
    return Conv4(in_shape, config.filters, out_features, generator)


__all__ = ["MLP", "Conv4", "ResNet12", "TextNet", "build_backbone", "reset_parameters_"]
