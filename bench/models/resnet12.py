"""ResNet-12 (Oreshkin et al. 2018, TADAM, https://arxiv.org/abs/1805.10123; Lee et al. 2019, MetaOptNet,
https://arxiv.org/abs/1904.03758) with a functional forward and per-task batch-norm statistics."""

from __future__ import annotations

import math
from collections.abc import Callable

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

    ``features(params, x)`` takes x of shape (B, n, C, H, W) and returns (B, n, feature_dim). Each
    parameter is shared or per task (leading dimension B), so the gradient-based methods that adapt
    the body run on it too: with any per-task body parameter the tasks are packed into the channel
    dimension and every convolution is one grouped call, as Conv-4's (equal to running each task
    alone, tested); with a shared body the tasks' images are one batch. Batch norm uses each task's
    statistics over its n images and all positions, like :class:`bench.models.conv4.Conv4`; there
    are no running statistics.

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
        own = dict(self.named_parameters())
        body = [name for name in own if name.startswith("blocks.")]
        for name in body:
            if params[name].shape not in (own[name].shape, (x.shape[0], *own[name].shape)):
                raise ValueError(f"ResNet-12: {name} has shape {tuple(params[name].shape)}, expected "
                                 f"{tuple(own[name].shape)} (shared) or {(x.shape[0], *own[name].shape)} (per task)")
        if any(params[name].dim() > own[name].dim() for name in body):
            return self._per_task_features(params, x, stats_from)
        return self._shared_features(params, x, stats_from)

    def _shared_features(self, params: Params, x: torch.Tensor, stats_from: int | None) -> torch.Tensor:
        """Shared body weights: the tasks' images are one batch, normalised task by task."""
        tasks, n = x.shape[:2]

        def norm(h: torch.Tensor, name: str) -> torch.Tensor:
            # Statistics per task and channel, over that task's n images (or its first stats_from) and all positions.
            grouped = h.unflatten(0, (tasks, n))
            var, mean = torch.var_mean(grouped[:, :stats_from], dim=(1, 3, 4), keepdim=True, correction=0)
            weight = params[f"{name}.weight"].view(1, 1, -1, 1, 1)
            bias = params[f"{name}.bias"].view(1, 1, -1, 1, 1)
            return ((grouped - mean) * torch.rsqrt(var + BN_EPS) * weight + bias).flatten(0, 1)

        def conv(h: torch.Tensor, name: str, padding: int) -> torch.Tensor:
            return F.conv2d(h, params[name], padding=padding)

        return self._blocks(x.flatten(0, 1), conv, norm).reshape(tasks, n, -1)

    def _per_task_features(self, params: Params, x: torch.Tensor, stats_from: int | None) -> torch.Tensor:
        """Per-task body weights (gradient-based methods adapting the body): the tasks side by side in
        the channel dimension, each layer one grouped convolution, as Conv-4 runs them."""
        tasks, n = x.shape[:2]

        def per_task(name: str) -> torch.Tensor:
            value = params[name]
            own = self.get_parameter(name)
            value = value if value.dim() > own.dim() else value.expand(tasks, *own.shape)
            return value.reshape(tasks * own.shape[0], *own.shape[1:])

        def norm(h: torch.Tensor, name: str) -> torch.Tensor:
            # Per channel of the packed map is per task and channel, over the task's images and positions.
            var, mean = torch.var_mean(h[:stats_from], dim=(0, 2, 3), keepdim=True, correction=0)
            weight, bias = per_task(f"{name}.weight").view(1, -1, 1, 1), per_task(f"{name}.bias").view(1, -1, 1, 1)
            return (h - mean) * torch.rsqrt(var + BN_EPS) * weight + bias

        def conv(h: torch.Tensor, name: str, padding: int) -> torch.Tensor:
            return F.conv2d(h, per_task(name), padding=padding, groups=tasks)

        h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:])
        out = self._blocks(h, conv, norm)
        return out.reshape(n, tasks, -1).transpose(0, 1)

    def _blocks(self, h: torch.Tensor, conv: Callable[[torch.Tensor, str, int], torch.Tensor],
                norm: Callable[[torch.Tensor, str], torch.Tensor]) -> torch.Tensor:
        for index in range(len(self.blocks)):
            prefix = f"blocks.{index}"
            out = h
            for layer in (1, 2, 3):
                out = norm(conv(out, f"{prefix}.conv{layer}.weight", 1), f"{prefix}.norm{layer}")
                if layer < 3:
                    out = F.leaky_relu(out, LEAKY_SLOPE)
            residual = norm(conv(h, f"{prefix}.shortcut_conv.weight", 0), f"{prefix}.shortcut_norm")
            h = F.max_pool2d(F.leaky_relu(out + residual, LEAKY_SLOPE), 2)
        return h
