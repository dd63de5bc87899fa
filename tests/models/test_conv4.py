"""The Conv-4 first block's folded batch norm against convolution then batch norm, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.models import conv4
from bench.models.conv4 import BN_EPS, Conv4, normalized_first_convolution


def reference_first_block(x, weight, bias, gamma, beta, stats_from):
    """Convolution then batch norm, one task at a time, the way a plain network computes them."""
    outputs = []
    for task in range(x.shape[0]):
        h = F.conv2d(x[task], weight[task], bias[task], padding=1)
        var, mean = torch.var_mean(h[:stats_from], dim=(0, 2, 3), keepdim=True, correction=0)
        outputs.append((h - mean) * torch.rsqrt(var + BN_EPS) * gamma[task].view(1, -1, 1, 1) + beta[task].view(1, -1, 1, 1))
    return torch.cat(outputs, 1)  # tasks side by side in the channel dimension


def parameters(tasks, channels, filters, generator):
    def draw(*shape):
        return torch.randn(tasks, *shape, generator=generator, dtype=torch.float64).requires_grad_()

    return draw(filters, channels, 3, 3), draw(filters), 1 + draw(filters), draw(filters)


@pytest.mark.parametrize("tasks", [1, 3])
@pytest.mark.parametrize("stats_from", [None, 2])
def test_the_folded_first_block_equals_convolution_then_batch_norm_with_second_derivatives(tasks, stats_from):
    generator = torch.Generator().manual_seed(0)
    x = (torch.rand(tasks, 5, 1, 12, 12, generator=generator, dtype=torch.float64) > 0.7).double()  # Omniglot-like strokes
    params = parameters(tasks, 1, 4, generator)
    folded = normalized_first_convolution(x, *params, stats_from)
    reference = reference_first_block(x, *params, stats_from)
    assert folded.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(folded, reference, rtol=0, atol=1e-10)
    # Second order (MAML differentiates through the inner gradient): the gradient of a loss and the
    # gradient of that gradient's norm agree too.
    probe = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    firsts, seconds = [], []
    for output in (folded, reference):
        grads = torch.autograd.grad((output * probe).sum(), params, create_graph=True)
        firsts.append(grads)
        seconds.append(torch.autograd.grad(sum((g**2).sum() for g in grads[::2]), params, allow_unused=True))
    for ours, theirs in zip(firsts[0] + seconds[0], firsts[1] + seconds[1], strict=True):
        assert (ours is None) == (theirs is None)  # beta's second derivative: unused in both
        if theirs is not None:
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-8)


def test_conv4_takes_the_folded_path_for_one_channel_and_the_plain_one_for_rgb(monkeypatch):
    folded_calls = []

    def counted(*args):
        folded_calls.append(args[0].shape[2])
        return normalized_first_convolution(*args)

    monkeypatch.setattr(conv4, "normalized_first_convolution", counted)
    generator = torch.Generator().manual_seed(1)
    for channels in (1, 3):
        model = Conv4((channels, 28, 28), 8, 5, torch.Generator().manual_seed(2)).double()
        x = torch.rand(2, 6, channels, 28, 28, generator=generator, dtype=torch.float64)
        params = model.params()
        h = x[0].contiguous()
        for block in model.blocks:  # the network as plain modules in batch-statistics mode, task 0
            h = F.relu(F.max_pool2d(F.batch_norm(block.conv(h), None, None, block.norm.weight, block.norm.bias,
                                                 training=True, eps=BN_EPS), 2))
        torch.testing.assert_close(model.features(params, x)[0], h.flatten(1), rtol=0, atol=1e-10)
    assert folded_calls == [1]  # the 1-channel network only
