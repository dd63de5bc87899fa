"""A multilayer perceptron whose forward takes its parameters, shared or one set per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.models.base import FunctionalNetwork, Params, linear
from bench.models.init import reset_parameters_


class MLP(FunctionalNetwork):
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
        self.layers = nn.ModuleList(nn.Linear(a, b, device="meta") for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)
        self.activation = {"relu": torch.relu, "tanh": torch.tanh}[activation]
        self.out_features = out_features
        last = len(self.layers) - 1
        self.head_prefix = f"layers.{last}"

    def features(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        """Output of the last hidden layer, (B, n, hidden[-1]); no batch norm, so ``stats_from`` is unused."""
        h = x
        for index in range(len(self.layers) - 1):
            h = self.activation(linear(params, f"layers.{index}", h))
        return h

