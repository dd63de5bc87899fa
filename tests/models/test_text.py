"""The text network: per-task parameters, PAD handling, and MAML through the word-CNN against learn2learn."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import TextModel, load_suite
from bench.datasets.text_features import PAD
from bench.models import TextNet
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator
from tests.tasks.test_text import generated_dataset

CONFIG = TextModel(kind="text", encoder="wordcnn", hidden=(8,), embedding_dim=6, filters=5, kernel_size=3,
                   max_tokens=10, vocabulary_size=30)


def ids(*rows: list[int], length: int = 10) -> torch.Tensor:
    return torch.tensor([row + [PAD] * (length - len(row)) for row in rows])


def test_per_task_parameters_give_each_task_the_output_of_its_own_network():
    net = TextNet(CONFIG, (10,), 3, generator("text-net"))
    x = torch.stack([ids([2, 3, 4], [5, 6]), ids([7, 8, 9, 10], [11])])  # (B=2, n=2, L)
    shared = net.params()
    per_task = {k: torch.stack([v, v + 0.1 * torch.randn_like(v)]) for k, v in shared.items()}
    together = net.functional(per_task, x)
    for task in range(2):
        alone = net.functional({k: v[task] for k, v in per_task.items()}, x[task:task + 1])
        torch.testing.assert_close(together[task:task + 1], alone, rtol=1e-5, atol=1e-6)


def test_padding_never_changes_a_texts_features():
    net = TextNet(CONFIG, (10,), 3, generator("text-net"))
    params = net.params()
    short = net.features(params, ids([2, 3, 4], length=4).view(1, 1, 4))
    padded = net.features(params, ids([2, 3, 4], length=10).view(1, 1, 10))
    beside_long = net.features(params, ids([2, 3, 4], [5, 6, 7, 8, 9, 10, 11, 12], length=10).view(1, 2, 10))
    torch.testing.assert_close(short, padded)
    torch.testing.assert_close(padded[0, 0], beside_long[0, 0])


def test_the_frozen_encoder_network_trains_only_the_layers_above_the_embeddings():
    net = TextNet(TextModel(kind="text", encoder="minilm", hidden=(16,)), (384,), 5, generator("text-net"))
    assert set(net.params()) == {"layers.0.weight", "layers.0.bias", "head_layer.weight", "head_layer.bias"}
    assert net.functional(net.params(), torch.randn(2, 7, 384)).shape == (2, 7, 5)


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_maml_through_the_word_cnn_matches_learn2learn_in_float64(tmp_path, inner_steps):
    pytest.importorskip("learn2learn")
    # learn2learn adapts every parameter: compare with the word embeddings adapted per task too.
    suite = load_suite(str(generated_dataset(tmp_path)), tier="smoke", overrides={"model.adapt_embeddings": True})
    episodes = Episodes(suite, torch.device("cpu"))
    batch = episodes.train(seed=0, iteration=0)
    grads = {}
    for name in ("maml", "maml.l2l"):
        cls = ALGORITHMS.get(name)
        algorithm = cls(cls.Hparams(inner_lr=0.3, inner_steps=inner_steps), problem_for(suite, episodes.source),
                        generator("equivalence"))
        algorithm.double()
        algorithm.meta_loss(batch.__class__(batch.support_x, batch.support_y, batch.query_x, batch.query_y)).backward()
        grads[name] = {k: p.grad for k, p in algorithm.backbone.named_parameters()}
    assert set(grads["maml"]) == set(grads["maml.l2l"])
    assert max((grads["maml"][k] - grads["maml.l2l"][k]).abs().max().item() for k in grads["maml"]) <= 1e-10
    assert grads["maml"]["embedding.weight"].abs().max() > 0  # the encoder itself is meta-learned


def test_by_default_inner_loops_keep_the_word_embeddings_shared_and_the_outer_loop_learns_them(tmp_path):
    suite = load_suite(str(generated_dataset(tmp_path)), tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    cls = ALGORITHMS.get("maml")
    maml = cls(cls.Hparams(inner_lr=0.3, inner_steps=1), problem_for(suite, episodes.source), generator("shared"))
    assert "embedding.weight" not in maml.adapted_names and "conv.weight" in maml.adapted_names
    maml.meta_loss(episodes.train(seed=0, iteration=0)).backward()
    assert maml.backbone.embedding.weight.grad.abs().max() > 0
    assert not ALGORITHMS.get("maml.l2l").applies_to(suite)


@pytest.mark.parametrize("per_task_tables", [False, True])
def test_the_word_embedding_gradient_has_the_same_bits_every_time_on_several_threads(per_task_tables):
    """Indexing's backward (index_put_ with accumulate) added repeated words' rows in a thread-timing
    order: four identical steps gave four different gradients at 2 threads."""
    config = TextModel(kind="text", encoder="wordcnn", hidden=(32,), embedding_dim=64, filters=32, max_tokens=48,
                       vocabulary_size=2000)
    net = TextNet(config, (48,), 5, generator("text-net"))
    words = torch.randint(1, 60, (4, 25, 48), generator=generator("frequent words"))  # many repeats of few ids
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gradients = []
        for _ in range(4):
            params = {k: v.detach().clone().requires_grad_() for k, v in net.params().items()}
            if per_task_tables:
                params["embedding.weight"] = params["embedding.weight"].expand(4, *params["embedding.weight"].shape)
            features = net.features(params, words)
            (gradient,) = torch.autograd.grad(features.square().sum(), params["embedding.weight"])
            gradients.append(gradient)
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(gradients[0], g) for g in gradients[1:])
