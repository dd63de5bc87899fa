"""PyTorch's default initialisation, drawn from an explicit generator instead of global RNG state."""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def reset_parameters_(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise Linear, Conv, Embedding and BatchNorm layers as their ``reset_parameters`` do, from ``generator``."""
    for layer in module.modules():
        if isinstance(layer, nn.Embedding):
            layer.weight.normal_(0.0, 1.0, generator=generator)
            if layer.padding_idx is not None:
                layer.weight[layer.padding_idx].zero_()
        elif isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            # kaiming_uniform_(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as does the bias.
            fan_in = layer.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            layer.weight.uniform_(-bound, bound, generator=generator)
            if layer.bias is not None:
                layer.bias.uniform_(-bound, bound, generator=generator)
        elif isinstance(layer, nn.modules.batchnorm._BatchNorm):
            layer.reset_running_stats()
            if layer.affine:
                layer.weight.fill_(1.0)
                layer.bias.zero_()
        elif list(layer.parameters(recurse=False)):
            raise TypeError(f"no seeded initialisation for {type(layer).__name__}")
    return module
