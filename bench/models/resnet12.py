"""ResNet-12 (Oreshkin et al. 2018, TADAM, https://arxiv.org/abs/1805.10123; Lee et al. 2019, MetaOptNet,
https://arxiv.org/abs/1904.03758) with a functional forward and per-task batch-norm statistics."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import FunctionalNetwork, Params
from bench.models.init import reset_parameters_

BN_EPS = 1e-5
LEAKY_SLOPE = 0.1


class ResNet12(FunctionalNetwork):
    """Four residual blocks of three 3x3 convolutions, then a linear head.

    Each block: three 3x3 convolutions (padding 1, no bias), each followed by batch norm, with
    leaky ReLU (slope 0.1) after the first two; a shortcut of 1x1 convolution and batch norm; the
    sum goes through leaky ReLU and a 2x2 max-pool. Widths 64-160-320-640 by default. The features
    are the last block's output flattened (no average pool, as in MetaOptNet's code): 640 for 28x28
    inputs, 640 * 5 * 5 for 84x84. DropBlock, which MetaOptNet adds on mini-ImageNet, is not
    implemented.

    ``features(params, x)`` takes x of shape (B, n, C, H, W) and returns (B, n, feature_dim). The
    body's parameters must be shared by all tasks (a per-task body would cost B separate networks
    of this size): a per-task body parameter raises ``ValueError``, so gradient-based methods that
    adapt the body do not apply to it; ``head`` accepts per-task parameters (ANIL adapts only the
    head). Batch norm uses each task's statistics over its n images and all positions, like
    :class:`bench.models.conv4.Conv4`; there are no running statistics.

    Initialisation, from ``generator``: convolutions He-normal (fan-out, as MetaOptNet's code),
    batch norm weight 1 and bias 0, the head as ``nn.Linear`` draws it.
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        channels: tuple[int, ...],
        out_features: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        in_channels, height, width = in_shape
        self.blocks = nn.ModuleList()
        for out_channels in channels:
            block = nn.Module()
            for index in (1, 2, 3):
                conv_in = in_channels if index == 1 else out_channels
                setattr(block, f"conv{index}", nn.Conv2d(conv_in, out_channels, 3, padding=1, bias=False, device="meta"))
                setattr(block, f"norm{index}", nn.BatchNorm2d(out_channels, track_running_stats=False, device="meta"))
            block.shortcut_conv = nn.Conv2d(in_channels, out_channels, 1, bias=False, device="meta")
            block.shortcut_norm = nn.BatchNorm2d(out_channels, track_running_stats=False, device="meta")
            self.blocks.append(block)
            in_channels, height, width = out_channels, height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"ResNet-12 needs inputs of at least 16x16 pixels, got {in_shape[1]}x{in_shape[2]}")
        self.feature_dim = in_channels * height * width
        self.head_layer = nn.Linear(self.feature_dim, out_features, device="meta")
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)
        with torch.no_grad():
            for module in self.blocks.modules():
                if isinstance(module, nn.Conv2d):
                    # He-normal with fan-out, gain sqrt(2): MetaOptNet's kaiming_normal_(mode='fan_out').
                    std = math.sqrt(2.0 / (module.out_channels * module.weight[0, 0].numel()))
                    module.weight.normal_(0.0, std, generator=generator)

    def features(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        """(B, n, C, H, W) -> (B, n, feature_dim); batch-norm statistics over the first ``stats_from`` images (all when None)."""
        tasks, n = x.shape[:2]
        own = dict(self.named_parameters())

        def shared(name: str) -> torch.Tensor:
            value = params[name]
            if value.shape != own[name].shape:
                raise ValueError(
                    f"ResNet-12 takes shared body parameters only: {name} has shape {tuple(value.shape)}, "
                    f"expected {tuple(own[name].shape)} (per-task parameters are not supported, so methods "
                    "that adapt the body per task do not apply to this model)"
                )
            return value

        def norm(h: torch.Tensor, name: str) -> torch.Tensor:
            # Statistics per task and channel, over that task's n images (or its first stats_from) and all positions.
            grouped = h.unflatten(0, (tasks, n))
            var, mean = torch.var_mean(grouped[:, :stats_from], dim=(1, 3, 4), keepdim=True, correction=0)
            weight = shared(f"{name}.weight").view(1, 1, -1, 1, 1)
            bias = shared(f"{name}.bias").view(1, 1, -1, 1, 1)
            return ((grouped - mean) * torch.rsqrt(var + BN_EPS) * weight + bias).flatten(0, 1)

        h = x.flatten(0, 1)
        for index in range(len(self.blocks)):
            prefix = f"blocks.{index}"
            out = h
            for conv in (1, 2, 3):
                out = norm(F.conv2d(out, shared(f"{prefix}.conv{conv}.weight"), padding=1), f"{prefix}.norm{conv}")
                if conv < 3:
                    out = F.leaky_relu(out, LEAKY_SLOPE)
            residual = norm(F.conv2d(h, shared(f"{prefix}.shortcut_conv.weight")), f"{prefix}.shortcut_norm")
            h = F.max_pool2d(F.leaky_relu(out + residual, LEAKY_SLOPE), 2)
        return h.reshape(tasks, n, -1)
