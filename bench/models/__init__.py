"""Networks with a functional forward: parameters are passed in, optionally with a task dimension."""

from __future__ import annotations

from collections.abc import Callable

import torch

from bench.config import Conv4Model, MLPModel, ResNet12Model, TextModel
from bench.models.base import FunctionalNetwork
from bench.models.conv4 import Conv4
from bench.models.init import reset_parameters_
from bench.models.mlp import MLP
from bench.models.resnet12 import ResNet12
from bench.models.text import TextNet

BACKBONES: dict[type, Callable[..., FunctionalNetwork]] = {
    MLPModel: lambda config, in_shape, out, generator: MLP(in_shape[0], config.hidden, out, generator, config.activation),
    Conv4Model: lambda config, in_shape, out, generator: Conv4(in_shape, config.filters, out, generator),
    ResNet12Model: lambda config, in_shape, out, generator: ResNet12(in_shape, config.channels, out, generator),
    TextModel: TextNet,
}
"""The network of each model configuration: ``builder(config, in_shape, out_features, generator)``."""


def build_backbone(
    config: MLPModel | Conv4Model | ResNet12Model | TextModel, in_shape: tuple[int, ...], out_features: int,
    generator: torch.Generator,
) -> FunctionalNetwork:
    return BACKBONES[type(config)](config, in_shape, out_features, generator)


__all__ = ["BACKBONES", "FunctionalNetwork", "MLP", "Conv4", "ResNet12", "TextNet", "build_backbone", "reset_parameters_"]
