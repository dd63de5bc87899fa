"""Conv-4 (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017) with a functional, per-task forward."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.base import FunctionalNetwork, Params
from bench.models.init import reset_parameters_

BN_EPS = 1e-5


class Conv4(FunctionalNetwork):
    """Four blocks of 3x3 convolution (padding 1), batch norm, ReLU and 2x2 max-pool, then a linear head.

    ``functional(params, x)`` takes x of shape (B, n, C, H, W) and parameters that are shared or
    per task (leading dimension B). Tasks are packed into the channel dimension and convolved as
    groups (``groups=B``), so B tasks cost one convolution call per layer, and batch norm computes
    its statistics per task and channel over that task's n images: batch statistics, the
    transductive mode of MAML's reference code. With ``stats_from=k`` the statistics come from each
    task's first k images only (its support set) and normalise all n: the inductive mode, in which
    a query's output does not depend on the other queries. There are no running statistics.
    """

    def __init__(self, in_shape: tuple[int, int, int], filters: int, out_features: int, generator: torch.Generator) -> None:
        super().__init__()
        channels, height, width = in_shape
        self.blocks = nn.ModuleList()
        for index in range(4):
            block = nn.Module()
            block.conv = nn.Conv2d(channels if index == 0 else filters, filters, 3, padding=1, device="meta")
            block.norm = nn.BatchNorm2d(filters, track_running_stats=False, device="meta")
            self.blocks.append(block)
            height, width = height // 2, width // 2
        self.feature_dim = filters * height * width
        self.head_layer = nn.Linear(self.feature_dim, out_features, device="meta")
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)

    def features(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        """(B, n, C, H, W) -> (B, n, feature_dim); batch-norm statistics over the first ``stats_from`` images (all when None)."""
        tasks, n = x.shape[:2]
        # channels_last: every layer then runs channels_last, in which oneDNN's convolutions with
        # few input channels (the first layer) ran 1.3-2x faster (measured). Except for one task of
        # 1-channel images (Omniglot at chunk 1): a single channel is contiguous in both formats,
        # and PyTorch then runs every layer contiguous; forcing channels_last after the first
        # convolution moved `bench perf`'s query step by -10% to +13% depending on the chunk (AMD
        # EPYC, ad hoc), so it is not done.
        h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:]).contiguous(memory_format=torch.channels_last)

        def per_task(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            value = params[name]
            if value.dim() == len(shape):
                value = value.expand(tasks, *shape)
            return value.reshape(tasks * shape[0], *shape[1:])

        for index, block in enumerate(self.blocks):
            prefix = f"blocks.{index}"
            conv, norm = cast(nn.Conv2d, block.conv), cast(nn.BatchNorm2d, block.norm)
            weight = per_task(f"{prefix}.conv.weight", tuple(conv.weight.shape))
            bias = per_task(f"{prefix}.conv.bias", tuple(cast(torch.Tensor, conv.bias).shape))
            h = F.conv2d(h, weight, bias, padding=1, groups=tasks)
            gamma = per_task(f"{prefix}.norm.weight", tuple(norm.weight.shape))
            beta = per_task(f"{prefix}.norm.bias", tuple(norm.bias.shape))
            if stats_from is None:
                h = F.batch_norm(h, None, None, gamma, beta, training=True, eps=BN_EPS)
            else:
                var, mean = torch.var_mean(h[:stats_from], dim=(0, 2, 3), keepdim=True, correction=0)
                h = (h - mean) * torch.rsqrt(var + BN_EPS) * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1)
            # max-pool before ReLU: the two commute exactly (both monotone; at ties both route the
            # gradient to the same element or to nothing), and ReLU then touches a quarter of the
            # elements (about 9% of a MAML step here, measured).
            h = F.relu(F.max_pool2d(h, 2))
        return h.reshape(n, tasks, -1).transpose(0, 1)
