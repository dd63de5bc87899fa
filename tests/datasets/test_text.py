"""Text datasets: the real files in BENCH_DATA_DIR/text, the committed class splits, and bad input."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from bench.config import TextData, load_suite
from bench.datasets import text
from bench.datasets.text_features import PAD, UNKNOWN, build_vocabulary, tokenize, word_ids
from bench.errors import BenchError

TEXT = Path(os.environ.get("BENCH_DATA_DIR", "")) / "text"
needs_text = pytest.mark.skipif(not (TEXT / "huffpost" / "huffpost.json").is_file(), reason="BENCH_DATA_DIR has no text data")


@needs_text
@pytest.mark.parametrize("suite, examples, classes, per_class", [
    ("huffpost-5w1s", 36900, 41, (900, 900)),
    ("reuters-5w1s", 620, 31, (20, 20)),
    ("banking77-5w1s", 13083, 77, (75, 227)),
    ("hwu64-5w1s", 11036, 64, (38, 194)),
    ("clinc150-5w1s", 22500, 150, (150, 150)),
])
def test_each_reader_reads_the_distributed_files(suite, examples, classes, per_class):
    data = text.load_examples(load_suite(suite).data)
    sizes = data.class_sizes()
    assert len(data.texts) == examples and len(sizes) == classes
    assert (min(sizes.values()), max(sizes.values())) == per_class
    assert all(isinstance(t, str) and t.strip() for t in data.texts)


@needs_text
@pytest.mark.parametrize("name, ranges", [("huffpost", (range(0, 20), range(20, 25), range(25, 41))),
                                          ("reuters", (range(0, 15), range(15, 20), range(20, 31)))])
def test_the_bao_splits_are_the_label_ranges_of_the_paper(name, ranges):
    for shots in ("5w1s", "5w5s"):
        split = load_suite(f"{name}-{shots}").data.split
        assert [split[s] for s in ("train", "val", "test")] == [tuple(map(str, r)) for r in ranges]


@needs_text
@pytest.mark.parametrize("name, sizes", [("banking77", (37, 20, 20)), ("hwu64", (34, 15, 15)), ("clinc150", (90, 30, 30))])
def test_the_intent_splits_are_the_seeded_splits_the_suite_files_describe(name, sizes):
    suite = load_suite(f"{name}-5w1s")
    names = sorted(text.load_examples(suite.data).class_sizes())
    random.Random(2024).shuffle(names)
    a, b, _ = sizes
    expected = [set(names[:a]), set(names[a:a + b]), set(names[a + b:])]
    assert [set(suite.data.split[s]) for s in ("train", "val", "test")] == expected
    assert [len(c) for c in expected] == list(sizes)
    assert load_suite(f"{name}-5w5s").data.split == suite.data.split


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _config(path: Path, **split) -> TextData:
    return TextData(kind="text", format="jsonl", files=(str(path),),
                    split=split or {"train": ("a",), "val": ("b",), "test": ("c",)})


@pytest.mark.parametrize("line, message", [
    ({"label": "a"}, "no 'text'"),
    ({"text": "hello"}, "no 'label'"),
    ({"text": "  ", "label": "a"}, "no 'text'"),
    ('{"text": "unterminated', "not a JSON object"),
    ('["text", "a"]', "expected a JSON object"),
    ({"text": {"nested": 1}, "label": "a"}, "must be a string"),
])
def test_a_bad_jsonl_line_is_one_error_naming_the_file_and_line(tmp_path, line, message):
    path = _jsonl(tmp_path / "data.jsonl", [{"text": "fine", "label": "a"}, line, {"text": "after", "label": "b"}])
    with pytest.raises(BenchError, match=rf"{path}:2: .*{message}"):
        text.load_examples(_config(path))


def test_missing_files_empty_splits_and_unknown_classes_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(BenchError, match=r"text data not found: .*huffpost.json; fetch https://.*sha256:"):
        text.required_files(load_suite("huffpost-5w1s").data)
    with pytest.raises(BenchError, match="hwu64.json; HWU64 .* has no official download"):
        text.required_files(load_suite("hwu64-5w1s").data)
    path = _jsonl(tmp_path / "data.jsonl", [{"text": f"t{i}", "label": label} for i, label in enumerate("abc")])
    examples = text.load_examples(_config(path))
    with pytest.raises(BenchError, match="split 'val' lists no classes"):
        text.split_members(_config(path, train=("a",), val=(), test=("c",)), examples)
    with pytest.raises(BenchError, match="split 'test' lists class 'z', which has no examples"):
        text.split_members(_config(path, train=("a",), val=("b",), test=("z",)), examples)
    with pytest.raises(BenchError, match="no examples found"):
        text.load_examples(_config(_jsonl(tmp_path / "empty.jsonl", [])))


def test_the_vocabulary_comes_from_the_given_texts_and_unknown_words_map_to_one_id():
    vocabulary = build_vocabulary(["the cat sat", "the dog sat", "the end"], size=5)
    assert vocabulary == {"the": 2, "sat": 3, "cat": 4}  # by count, ties by word, after PAD and UNKNOWN
    ids = word_ids(["The cat barked!", ""], vocabulary, max_tokens=5)
    assert ids.tolist() == [[2, 4, UNKNOWN, UNKNOWN, PAD], [UNKNOWN, PAD, PAD, PAD, PAD]]
    assert tokenize("Don't stop: 2x") == ["don't", "stop", ":", "2x"]
