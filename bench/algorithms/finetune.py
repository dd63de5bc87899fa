"""Fine-tuning with a linear head, per support set: the transfer baseline of pre-trained text encoders
(Devlin, Chang, Lee and Toutanova, "BERT", NAACL 2019, https://arxiv.org/abs/1810.04805, section 4),
run on each few-shot task as in Bragg, Cohan, Lo and Beltagy, "FLEX: Unifying Evaluation for
Few-Shot NLP", NeurIPS 2021 (https://arxiv.org/abs/2107.07170).
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field

from bench.algorithms.base import Hyperparameters, LearningRate, Problem, Search, register
from bench.algorithms.sentence import SentenceEncoderBaseline
from bench.config import MAX_STEPS
from bench.datasets.text_features import MINILM_DIM

BERT_INIT_STD = 0.02  # BERT's initializer_range


class FinetuneHparams(Hyperparameters):
    steps: int = Field(default=50, ge=0, le=MAX_STEPS)
    head_lr: Annotated[LearningRate, Search(1e-3, 1e-1, log=True)] = 0.01
    encoder_lr: Annotated[LearningRate, Search(1e-6, 1e-3, log=True)] = 5e-5
    weight_decay: float = Field(default=0.01, ge=0.0)


@register("finetune")
class Finetune(SentenceEncoderBaseline):
    """Fine-tuning (Devlin et al. 2019) per support set: a new linear head on the pre-trained sentence embeddings, trained with the encoder's trainable layers on the task's support set; nothing meta-trained.

    Each task starts from all-MiniLM-L6-v2's weights and the same head, drawn once per run as BERT
    initialises its classifier (weights normal with standard deviation 0.02, bias zero), then takes ``steps`` full-batch AdamW steps on the support set's cross-entropy:
    ``head_lr`` for the head, ``encoder_lr`` for the suite's ``finetune_layers`` top transformer
    layers (``encoder: minilm-finetune``; with the frozen ``encoder: minilm`` only the head trains,
    which is logistic regression on the frozen embeddings). Queries are scored by the adapted
    encoder and head.
    """

    Hparams = FinetuneHparams
    hparams: FinetuneHparams
    head_weight: torch.Tensor  # buffer: every task's initial head

    def __init__(self, hparams: FinetuneHparams, problem: Problem, generator: torch.Generator) -> None:
        super().__init__(hparams, problem, generator)
        self.register_buffer("head_weight", torch.randn(problem.out_features, MINILM_DIM, generator=generator) * BERT_INIT_STD)

    def protocol_shaped_state(self) -> tuple[str, ...]:
        return ("head_weight",)

    def evaluation_steps(self, protocol_steps: int) -> int:
        return self.hparams.steps

    def adapt_and_score(self, support_x: torch.Tensor, support_y: torch.Tensor, query_x: torch.Tensor,
                        ways: int, steps: int) -> torch.Tensor:
        encoder = self.initial_encoder()
        weight = self.head_weight[:ways].clone().requires_grad_()
        bias = torch.zeros(ways, device=support_y.device, requires_grad=True)
        groups = [{"params": [weight, bias], "lr": self.hparams.head_lr}]
        if encoder:
            groups.append({"params": list(encoder.values()), "lr": self.hparams.encoder_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=self.hparams.weight_decay)
        embed_support = self.embedder(support_x)
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(F.linear(embed_support(encoder), weight, bias), support_y).backward()
                optimizer.step()
        with torch.no_grad():
            return F.linear(self.embedder(query_x)({k: v.detach() for k, v in encoder.items()}), weight, bias)
