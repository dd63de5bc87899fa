"""Networks with a functional forward: parameters are passed in, optionally with a task dimension."""

from __future__ import annotations

import torch

from bench.config import MLPModel
from bench.models.init import reset_parameters_
from bench.models.mlp import MLP


def build_backbone(config: MLPModel, in_features: int, out_features: int, generator: torch.Generator) -> MLP:
    return MLP(in_features, config.hidden, out_features, generator, config.activation)


__all__ = ["MLP", "build_backbone", "reset_parameters_"]
