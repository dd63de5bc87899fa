"""What every backbone shares: parameters passed in (``functional``), a linear head on the features."""

from __future__ import annotations

import torch
from torch import nn

Params = dict[str, torch.Tensor]


def linear(params: Params, prefix: str, h: torch.Tensor) -> torch.Tensor:
    """The linear layer ``prefix`` with the given parameters, shared (out, in) or per task (B, out, in), on h (B, n, in)."""
    weight, bias = params[f"{prefix}.weight"], params[f"{prefix}.bias"]
    return torch.matmul(h, weight.transpose(-1, -2)) + bias.unsqueeze(-2)


class FunctionalNetwork(nn.Module):
    """A network whose forward takes its parameters: ``functional(params, x)`` = ``head(features(x))``.

    Subclasses define ``features(params, x, stats_from)`` (``stats_from``: the batch-norm
    statistics come from each task's first ``stats_from`` inputs; ignored without batch norm) and
    ``head_prefix``, the name of the linear layer that ends them (its parameters are ``head_names``).
    """

    head_prefix = "head_layer"
    feature_dim: int  # the length of one example's feature vector

    @property
    def head_names(self) -> tuple[str, str]:
        return (f"{self.head_prefix}.weight", f"{self.head_prefix}.bias")

    def params(self) -> Params:
        return dict(self.named_parameters())

    def features(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        raise NotImplementedError

    def shared_encoding(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the work that reads only ``task_shared_names`` parameters done, in a form
        ``features`` takes again; the identity here. Inner loops that adapt none of those
        parameters compute it once per task instead of at every step."""
        return x

    def head(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        return linear(params, self.head_prefix, h)

    def functional(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        return self.head(params, self.features(params, x, stats_from))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.functional(self.params(), x)
