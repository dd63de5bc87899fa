"""PyTorch's default initialisation, drawn from an explicit generator instead of global RNG state."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def reset_parameters_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise every Linear layer as ``nn.Linear.reset_parameters`` does, from ``generator``."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            # kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as does the bias.
            bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
            layer.weight.uniform_(-bound, bound, generator=generator)
            if layer.bias is not None:
                layer.bias.uniform_(-bound, bound, generator=generator)
        elif list(layer.parameters(recurse=False)):
            raise TypeError(f"no seeded initialisation for {type(layer).__name__}")
    return module
