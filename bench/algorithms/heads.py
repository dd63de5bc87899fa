"""Classifier heads fitted on one task's support features, shared by the algorithms that end in one."""

from __future__ import annotations

import numpy as np
import torch

from bench.errors import BenchError


def logistic_regression_scores(name: str, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int,
                               c: float, max_iter: int) -> torch.Tensor:
    """scikit-learn's LogisticRegression (lbfgs, L2) fitted on one task's support features (n, d): the
    query features' (m, d) class scores (m, ways), the log-odds of each class up to a constant per query."""
    from sklearn.linear_model import LogisticRegression

    y = labels.cpu().numpy()
    if len(set(y.tolist())) != ways:
        raise BenchError(f"{name}: a support set without every one of its {ways} classes")
    head = LogisticRegression(C=c, max_iter=max_iter, random_state=0)
    head.fit(support.double().cpu().numpy(), y)
    scores = head.decision_function(query.double().cpu().numpy())
    if scores.ndim == 1:  # two classes: scikit-learn gives class 1's log-odds alone; class 0's is 0
        scores = np.stack([np.zeros_like(scores), scores], axis=1)
    return torch.as_tensor(scores, dtype=query.dtype, device=query.device)
