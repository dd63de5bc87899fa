"""A multilayer perceptron whose forward takes its parameters, shared or one set per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.models.init import reset_parameters_

Params = dict[str, torch.Tensor]


class MLP(nn.Module):
    """Linear layers with an activation between them; the last layer is the ``head``.

    Weights are drawn as ``nn.Linear`` draws them, from ``generator``.

    ``functional(params, x)`` runs the network with ``params`` instead of its own parameters. Each
    parameter is either shared, of its usual shape, or per task, with a leading task dimension B;
    ``x`` is (B, n, in_features). Per-task parameters run all tasks in one batched matmul, which is
    what makes the inner loops of MAML-style algorithms fast on small networks.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        generator: torch.Generator,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden, out_features]
        # Built on the meta device, then initialised from ``generator``: nn.Linear's own
        # initialisation would draw from (and advance) the global RNG.
        self.layers = nn.ModuleList(nn.Linear(a, b, device="meta") for a, b in zip(widths[:-1], widths[1:]))
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)
        self.activation = {"relu": torch.relu, "tanh": torch.tanh}[activation]
        self.out_features = out_features
        last = len(self.layers) - 1
        self.head_names = (f"layers.{last}.weight", f"layers.{last}.bias")

    def params(self) -> Params:
        return dict(self.named_parameters())

    @staticmethod
    def _linear(params: Params, index: int, h: torch.Tensor) -> torch.Tensor:
        weight, bias = params[f"layers.{index}.weight"], params[f"layers.{index}.bias"]
        return torch.matmul(h, weight.transpose(-1, -2)) + bias.unsqueeze(-2)

    def features(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Output of the last hidden layer, (B, n, hidden[-1])."""
        h = x
        for index in range(len(self.layers) - 1):
            h = self.activation(self._linear(params, index, h))
        return h

    def head(self, params: Params, h: torch.Tensor) -> torch.Tensor:
        return self._linear(params, len(self.layers) - 1, h)

    def functional(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        return self.head(params, self.features(params, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.functional(self.params(), x)
