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

        def full(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            value = params[name]
            return value.expand(tasks, *shape) if value.dim() == len(shape) else value

        def per_task(name: str, shape: tuple[int, ...]) -> torch.Tensor:
            return full(name, shape).reshape(tasks * shape[0], *shape[1:])

        # channels_last: every layer then runs channels_last, in which oneDNN's convolutions and
        # max-pool ran 1.3-2x faster (measured); a 1-channel input is both layouts at once, so the
        # first block of a 1-channel network is built channels_last below.
        h = x.transpose(0, 1).reshape(n, tasks * x.shape[2], *x.shape[3:]).contiguous(memory_format=torch.channels_last)
        for index, block in enumerate(self.blocks):
            prefix = f"blocks.{index}"
            conv = cast(nn.Conv2d, block.conv)
            bias_shape = tuple(cast(torch.Tensor, conv.bias).shape)
            shapes = {f"{prefix}.conv.weight": tuple(conv.weight.shape), f"{prefix}.conv.bias": bias_shape,
                      f"{prefix}.norm.weight": bias_shape, f"{prefix}.norm.bias": bias_shape}
            if index == 0 and conv.in_channels == 1:
                weight, bias, gamma, beta = (full(name, shape) for name, shape in shapes.items())
                h = normalized_first_convolution(x, weight, bias, gamma, beta, stats_from)
            else:
                weight, bias, gamma, beta = (per_task(name, shape) for name, shape in shapes.items())
                h = F.conv2d(h, weight, bias, padding=1, groups=tasks)
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


def normalized_first_convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, gamma: torch.Tensor,
                                 beta: torch.Tensor, stats_from: int | None) -> torch.Tensor:
    """Batch norm of a 3x3 convolution (padding 1) of the network's input, as one matrix product per
    task: (B, n, C, H, W) and per-task (B, F, C, 3, 3), (B, F) parameters -> (n, B * F, H, W), channels_last.

    A convolution output's batch statistics are those of the input's 3x3 patches seen through the
    weights: mean w.p_mean + b and variance w' P_cov w (per task, over the statistics' images and
    every position). The input's patch moments are constants of the episode, so batch norm folds
    into the weights and bias (scale gamma / sqrt(var + eps)) and the large first feature map is
    written once, with no normalisation pass over it forward or backward (batch norm's passes were
    a fifth of an Omniglot query step, most of them on this map; measured with torch.profiler).
    Equal to convolution then batch norm up to rounding (tests/models/test_conv4.py); used for
    1-channel inputs only, where it was measured (the patch covariance costs (9 C)^2 per position).
    """
    tasks, n, channels, height, width = x.shape
    filters, patch, positions = weight.shape[1], channels * 9, height * width
    rows = patch_rows(x)  # (B, n * H * W, 9 C + 1)
    source = rows[:, : (n if stats_from is None else stats_from) * positions, :patch]
    patch_mean = source.mean(1)
    centred = source - patch_mean.unsqueeze(1)
    patch_cov = centred.transpose(1, 2) @ centred / centred.shape[1]
    flat = weight.reshape(tasks, filters, patch)
    mean = (flat @ patch_mean.unsqueeze(-1)).squeeze(-1) + bias
    var = ((flat @ patch_cov) * flat).sum(-1)
    scale = gamma * torch.rsqrt(var + BN_EPS)
    # The bias as the weight of the rows' constant column: no broadcast pass over the output.
    folded = torch.cat([flat * scale.unsqueeze(-1), ((bias - mean) * scale + beta).unsqueeze(-1)], -1)
    out = torch.bmm(rows, folded.transpose(1, 2))
    if tasks == 1:
        return out.view(n, height, width, filters).permute(0, 3, 1, 2)
    # Tasks side by side in the channel dimension, as the grouped convolutions that follow take them.
    out = out.view(tasks, n, height, width, filters).permute(1, 2, 3, 0, 4).reshape(n, height, width, tasks * filters)
    return out.permute(0, 3, 1, 2)


def patch_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, n, C, H, W) -> (B, n * H * W, 9 C + 1): each position's 3x3 patch (zero padding 1) in
    ``F.conv2d``'s weight order, then a 1; written in one pass from a strided view of the padded input."""
    tasks, n, channels, height, width = x.shape
    padded = F.pad(x.reshape(tasks * n, channels, height, width), (1, 1, 1, 1))
    windows = padded.unfold(2, 3, 1).unfold(3, 3, 1).permute(0, 2, 3, 1, 4, 5)  # (B n, H, W, C, 3, 3), a view
    rows = x.new_empty(tasks * n, height, width, channels * 9 + 1)
    rows[..., :-1].view(tasks * n, height, width, channels, 3, 3).copy_(windows)
    rows[..., -1] = 1
    return rows.view(tasks, n * height * width, channels * 9 + 1)
