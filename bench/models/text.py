"""Text classifiers over a sentence encoder, with a functional forward that takes per-task parameters."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.config import TextModel
from bench.datasets.text_features import MINILM_DIM
from bench.models.base import FunctionalNetwork, Params, linear
from bench.models.init import reset_parameters_
from bench.models.minilm import MiniLMEncoder

PAD = 0  # bench.datasets.text_features.PAD


class TextNet(FunctionalNetwork):
    """Encoder, then Linear+ReLU layers of widths ``hidden``, then a linear head (``head_layer``).

    With ``encoder: minilm`` the inputs are the frozen sentence embeddings (B, n, 384) and only the
    layers above them learn. With ``encoder: minilm-finetune`` the inputs are word-piece ids
    (B, n, L) and the transformer's top layers train too (:class:`bench.models.minilm.MiniLMEncoder`),
    shared by the tasks: the inner loops adapt the layers above it. With ``encoder: wordcnn`` the
    inputs are word ids (B, n, max_tokens),
    PAD-padded, and the encoder learns too: word embedding, a 1-d convolution (padding keeps the
    length), ReLU, and max-pooling over each text's own tokens (PAD positions masked).

    Parameters are shared, of their usual shape, or per task with a leading task dimension B, as
    in :class:`bench.models.MLP`: per-task convolutions run as one grouped convolution and per-task
    embeddings as one gather, so MAML-style inner loops adapt every task at once.
    """

    def __init__(self, config: TextModel, in_shape: tuple[int, ...], out_features: int, generator: torch.Generator) -> None:
        super().__init__()
        self.encoder = config.encoder
        if config.encoder == "wordcnn":
            self.embedding = nn.Embedding(config.vocabulary_size, config.embedding_dim, padding_idx=PAD, device="meta")
            self.conv = nn.Conv1d(config.embedding_dim, config.filters, config.kernel_size,
                                  padding=config.kernel_size // 2, device="meta")
            width = config.filters
        elif config.encoder == "minilm-finetune":
            width = MINILM_DIM
        else:
            width = in_shape[0]
        widths = [width, *config.hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b, device="meta") for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.feature_dim = widths[-1]
        self.head_layer = nn.Linear(self.feature_dim, out_features, device="meta")
        self.to_empty(device="cpu")
        reset_parameters_(self, generator)
        # Parameters that inner loops leave shared across tasks (meta-learned by the outer loop only).
        self.task_shared_names: tuple[str, ...] = ()
        if self.encoder == "wordcnn" and not config.adapt_embeddings:
            self.task_shared_names = ("embedding.weight",)
        if self.encoder == "minilm-finetune":
            # Pre-trained, so built after the seeded initialisation of the layers above it.
            self.transformer = MiniLMEncoder(config.finetune_layers, config.pooling)
            self.task_shared_names = self.transformer.trainable_names("transformer.")

    def encode(self, params: Params, ids: torch.Tensor) -> torch.Tensor:
        """Word ids (B, n, L) -> (B, n, filters): the word-CNN's max-pooled sentence vectors."""
        # Only the longest text of the batch matters: PAD positions embed as zeros (masked below), as
        # the convolution's own zero padding does, so cutting trailing PAD columns changes nothing.
        length = max(int((ids != PAD).sum(-1).max()), 1)
        ids = ids[..., :length]
        tasks, n, _ = ids.shape
        table = params["embedding.weight"]
        # F.embedding, not table[ids]: indexing's backward (index_put_ with accumulate) adds the rows of
        # repeated words in an order that depends on thread timing on a multi-core CPU, a different
        # gradient bit pattern each run; embedding's backward gives each thread whole rows of the
        # table and adds into a row in index order, the same bits whatever the threads.
        if table.dim() == 2:
            words = F.embedding(ids, table)
        else:  # one table per task (B, V, E): one lookup into the tables laid end to end
            vocabulary = table.shape[1]
            offsets = torch.arange(tasks, device=ids.device).view(tasks, 1, 1) * vocabulary
            words = F.embedding(ids + offsets, table.reshape(tasks * vocabulary, table.shape[2]))
        present = (ids != PAD).unsqueeze(-1)
        words = words * present
        weight, bias = params["conv.weight"], params["conv.bias"]
        filters = weight.shape[-3]
        if weight.dim() == 3:
            weight, bias = weight.expand(tasks, *weight.shape), bias.expand(tasks, *bias.shape)
        h = words.permute(1, 0, 3, 2).reshape(n, tasks * words.shape[-1], length)  # (n, B*E, L)
        h = F.conv1d(h, weight.reshape(tasks * filters, *weight.shape[-2:]), bias.reshape(-1),
                     padding=self.conv.padding, groups=tasks)
        h = F.relu(h).view(n, tasks, filters, -1)[..., :length]
        mask = present.squeeze(-1).transpose(0, 1).unsqueeze(2)  # (n, B, 1, L)
        return (h * mask).amax(dim=-1).transpose(0, 1)  # after ReLU every value is >= 0, so masked zeros never win

    def shared_encoding(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Word-piece ids (B, n, L) -> the transformer's sentence embeddings (B, n, 384), which ``features`` takes as
        they are (floating point); anything else unchanged."""
        return self._sentence_embeddings(params, x) if self.encoder == "minilm-finetune" else x

    def _sentence_embeddings(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():  # encoded already (shared_encoding)
            return x
        tasks, n, length = x.shape
        return self.transformer(params, x.reshape(tasks * n, length), prefix="transformer.").view(tasks, n, -1)

    def features(self, params: Params, x: torch.Tensor, stats_from: int | None = None) -> torch.Tensor:
        """(B, n, 384) embeddings or (B, n, L) word ids -> (B, n, feature_dim); no batch norm, so ``stats_from`` is unused."""
        if self.encoder == "wordcnn":
            h = self.encode(params, x)
        elif self.encoder == "minilm-finetune":
            h = self._sentence_embeddings(params, x)
        else:
            h = x
        for index in range(len(self.layers)):
            h = F.relu(linear(params, f"layers.{index}", h))
        return h
