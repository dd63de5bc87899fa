"""SetFit: Tunstall, Reimers, Jo, Bates, Korat, Wasserblat and Pereg, "Efficient Few-Shot Learning
Without Prompts", 2022. https://arxiv.org/abs/2209.11055 (the `setfit` package, 1.2.0, is the reference:
tests/algorithms/test_setfit.py holds the pairs, the loss, the optimiser's steps and the head equal to it).
"""

from __future__ import annotations

import math
from itertools import zip_longest
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Problem, Search, register
from bench.algorithms.heads import logistic_regression_scores
from bench.algorithms.sentence import Embed, SentenceEncoderBaseline
from bench.config import Suite
from bench.models.base import Params

PAIR_SHUFFLE_SEED = 42  # setfit.sampler.shuffle_combinations: a fixed permutation of all pairs
MAX_GRAD_NORM = 1.0  # transformers' Trainer default, which setfit's training goes through


class SetFitHparams(Hyperparameters):
    # Pairs per text and kind (positive, negative); None: setfit 1.x's "oversampling" (every pair of
    # the rarer kind repeated up to the commoner's count). The paper's experiments use 20.
    num_iterations: int | None = Field(default=20, ge=1)
    batch_size: int = Field(default=16, ge=1)
    epochs: int = Field(default=1, ge=1)
    body_lr: Annotated[LearningRate, Search(1e-6, 1e-4, log=True)] = 2e-5
    warmup_proportion: float = Field(default=0.1, ge=0.0, le=1.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    head_c: float = Field(default=1.0, gt=0.0)  # the logistic regression head's inverse L2 strength (scikit-learn's C)
    head_max_iter: int = Field(default=100, ge=1)


def contrastive_pairs(labels: list[int], num_iterations: int | None) -> list[tuple[int, int, float]]:
    """setfit.sampler.ContrastiveDataset's pairs of texts (by index) with their target cosine, in its order:
    every pair with replacement, in one fixed shuffled order, split into positives (same label, 1.0)
    and negatives (0.0), each cycled to its count, then interleaved."""
    n = len(labels)
    pairs = np.stack(np.triu_indices(n, 0), axis=-1)
    positives: list[tuple[int, int, float]] = []
    negatives: list[tuple[int, int, float]] = []
    for i in np.random.RandomState(seed=PAIR_SHUFFLE_SEED).permutation(len(pairs)):
        a, b = (int(v) for v in pairs[i])
        (positives if labels[a] == labels[b] else negatives).append((a, b, 1.0 if labels[a] == labels[b] else 0.0))
    count_pos = count_neg = num_iterations * n if num_iterations is not None else max(len(positives), len(negatives))

    def cycled(kind: list[tuple[int, int, float]], count: int) -> list[tuple[int, int, float]]:
        return [kind[k % len(kind)] for k in range(count)] if kind else []

    return [pair for couple in zip_longest(cycled(positives, count_pos), cycled(negatives, count_neg))
            for pair in couple if pair is not None]


def linear_schedule(step: int, total: int, warmup: int) -> float:
    """transformers.get_linear_schedule_with_warmup's factor of the learning rate at ``step``."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def decays(name: str) -> bool:
    """transformers' Trainer leaves biases and LayerNorm weights out of weight decay."""
    return not (name.endswith("bias") or "LayerNorm" in name)


@register("setfit")
class SetFit(SentenceEncoderBaseline):
    """SetFit (Tunstall et al. 2022) per support set: contrastive fine-tuning of the sentence encoder on pairs of the task's support texts, then a logistic-regression head on the fine-tuned embeddings; nothing meta-trained.

    As the `setfit` package trains (version 1.2.0, its defaults but the paper's 20 pair iterations):
    pairs of support texts labelled 1 (same class, a text with itself included) or 0, ``num_iterations``
    of each kind per text; the loss is the squared error between the pair's cosine similarity and
    its label (sentence-transformers' CosineSimilarityLoss); ``epochs`` passes in batches of
    ``batch_size`` with AdamW at ``body_lr`` (weight decay but on biases and LayerNorm weights,
    gradient norm clipped at 1, linear warm-up over ``warmup_proportion`` of the steps then linear
    decay). The encoder's trainable part is the suite's ``finetune_layers`` top layers (the paper
    trains them all: ``finetune_layers: all``). The head is scikit-learn's LogisticRegression, fitted
    on the support embeddings. Dropout is off, as everywhere in bench (setfit trains with the model's
    dropout of 0.1), so a run gives the same bits each time. The pairs' order in each epoch is a permutation drawn from a
    generator seeded once per run (setfit's trainer draws it from its seed, 42 by default), so a
    task's result is a function of the run's seed and the task only.
    """

    Hparams = SetFitHparams
    hparams: SetFitHparams
    encoders = frozenset({"minilm-finetune"})

    def __init__(self, hparams: SetFitHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.shuffle_seed = int(torch.randint(2**62, (1,), generator=generator))

    @classmethod
    def inapplicable(cls, suite: Suite) -> str | None:
        if suite.model.kind == "text" and suite.model.encoder == "minilm":
            return "fine-tunes the sentence encoder, which encoder: minilm keeps frozen (use --encoder minilm-finetune)"
        return super().inapplicable(suite)

    def evaluation_steps(self, protocol_steps: int) -> int:
        return 0  # its training length is set by its pairs (num_iterations, epochs), not by inner steps

    def adapt_and_score(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                        ways: int, steps: int) -> torch.Tensor:
        encoder = self.initial_encoder()
        embed_support = self.embedder(support_x)
        if encoder:
            self.contrastive_fit(encoder, embed_support, support_y.tolist())
        with torch.no_grad():
            fixed = {k: v.detach() for k, v in encoder.items()}
            support, query = embed_support(fixed), self.embedder(query_x)(fixed)
        return self.head_scores(support, support_y, query, ways)

    def contrastive_fit(self, encoder: Params, embed: Embed, labels: list[int]) -> None:
        """Train ``encoder``'s tensors in place on the support texts' pairs."""
        pairs = contrastive_pairs(labels, self.hparams.num_iterations)
        first, second, target = (torch.tensor(column, device=next(iter(encoder.values())).device)
                                 for column in zip(*pairs, strict=True))
        target = target.float()
        size = self.hparams.batch_size
        per_epoch = math.ceil(len(pairs) / size)
        total = per_epoch * self.hparams.epochs
        warmup = math.ceil(total * self.hparams.warmup_proportion)
        optimizer = torch.optim.AdamW([
            {"params": [p for n, p in encoder.items() if decays(n)], "weight_decay": self.hparams.weight_decay},
            {"params": [p for n, p in encoder.items() if not decays(n)], "weight_decay": 0.0},
        ], lr=self.hparams.body_lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_schedule(step, total, warmup))
        order_generator = torch.Generator().manual_seed(self.shuffle_seed)
        with torch.enable_grad():
            for _ in range(self.hparams.epochs):
                order = torch.randperm(len(pairs), generator=order_generator).to(first.device)
                for start in range(0, len(pairs), size):
                    chosen = order[start:start + size]
                    embeddings = embed(encoder)  # every support text once: a pair's texts are rows of it
                    cosine = F.cosine_similarity(embeddings[first[chosen]], embeddings[second[chosen]])
                    loss = F.mse_loss(cosine, target[chosen])
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(list(encoder.values()), MAX_GRAD_NORM)
                    optimizer.step()
                    schedule.step()

    def head_scores(self, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, ways: int) -> torch.Tensor:
        """scikit-learn's LogisticRegression (setfit's default head) on the support embeddings -> query scores (n, ways)."""
        return logistic_regression_scores(self.name, support, labels, query, ways, self.hparams.head_c,
                                          self.hparams.head_max_iter)