"""Matching Networks: Vinyals, Blundell, Lillicrap, Kavukcuoglu and Wierstra, "Matching Networks for
One Shot Learning", NeurIPS 2016. https://arxiv.org/abs/1606.04080
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.algorithms.base import register
from bench.algorithms.embedding import EmbeddingBased, EmbeddingHparams


def matching_log_probs(support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
    """Log of the attention-weighted label distribution, (B, n_query, ways).

    support: (B, n_support, d) embeddings with labels (B, n_support) in 0..ways-1; query: (B, n_query, d).
    The attention over the support set is a softmax of cosine similarities, and a class's
    probability is the attention mass on its examples: log p(c | q) = logsumexp over the class's
    similarities minus logsumexp over all of them.
    """
    similarity = F.normalize(query, dim=-1) @ F.normalize(support, dim=-1).transpose(1, 2)  # (B, n_query, n_support)
    in_class = F.one_hot(labels, ways).bool().unsqueeze(1)  # (B, 1, n_support, ways)
    per_class = similarity.unsqueeze(-1).masked_fill(~in_class, float("-inf")).logsumexp(dim=2)
    return per_class - similarity.logsumexp(dim=-1, keepdim=True)


@register("matchingnet")
class MatchingNet(EmbeddingBased):
    """Matching Networks (Vinyals et al. 2016): a query's label distribution is a softmax attention over the support set by cosine similarity of embeddings.

    The plain version, without the paper's full-context embeddings (FCE: a bidirectional LSTM over
    the support set and an attention LSTM for each query): support and query examples are both
    embedded by the backbone's features (f = g). Support and query images of an episode are
    embedded together, so batch norm uses the episode's statistics (inductive: its support set's).
    The loss is the cross-entropy
    of the label distribution.
    """

    family = "metric-based"
    Hparams = EmbeddingHparams
    hparams: EmbeddingHparams

    def scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """Log-probabilities of each query's class, (B, n_query, ways)."""
        return matching_log_probs(support, labels, query, ways)
