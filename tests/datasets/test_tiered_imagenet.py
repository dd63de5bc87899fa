"""tieredImageNet: generated pickles in the format of Ren et al.'s code (the real ones are not on our
machines), classes of different sizes, and refusals of missing, mismatched or tampered files."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.config import load_suite
from bench.datasets import tiered_imagenet
from bench.errors import BenchError, DataNotFound

CLASSES = {"train": ["n01", "n02", "n03"], "val": ["n04", "n05"], "test": ["n06", "n07"]}
COUNTS = {"train": [3, 2, 4], "val": [2, 3], "test": [3, 2]}


def png(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)).save(out, format="PNG")
    return np.frombuffer(out.getvalue(), dtype=np.uint8)


def write_split(root: Path, split: str, images_count: int | None = None) -> list[np.ndarray]:
    labels = [label for label, count in enumerate(COUNTS[split]) for _ in range(count)]
    labels = labels[1::2] + labels[0::2]  # interleaved classes, as a shuffled pickle has them
    images = [png(100 * list(CLASSES).index(split) + i) for i in range(len(labels))]
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{split}_images_png.pkl").write_bytes(pickle.dumps(images[:images_count], protocol=2))
    (root / f"{split}_labels.pkl").write_bytes(pickle.dumps({
        "label_specific": np.asarray(labels), "label_general": np.zeros(len(labels), dtype=np.int64),
        "label_specific_str": CLASSES[split], "label_general_str": ["category"]}, protocol=2))
    return images


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "data" / "tiered-imagenet"


def test_the_pickles_give_each_split_s_classes_in_their_order(root):
    written = {split: write_split(root, split) for split in CLASSES}
    config = load_suite("tiered-imagenet-5w1s").data
    data, splits = tiered_imagenet.load_split_images(config)
    assert data.class_names == ("train/n01", "train/n02", "train/n03", "val/n04", "val/n05", "test/n06", "test/n07")
    assert data.counts == (3, 2, 4, 2, 3, 3, 2) and data.images.shape == (7, 4, 3, 84, 84)
    assert splits == {"train": [0, 1, 2], "val": [3, 4], "test": [5, 6]}
    labels = pickle.loads((root / "train_labels.pkl").read_bytes())["label_specific"]
    first_of_class_1 = int(np.flatnonzero(labels == 1)[0])
    expected = np.asarray(Image.open(io.BytesIO(written["train"][first_of_class_1].tobytes())).convert("RGB"))
    assert np.array_equal(data.images[1, 0].numpy(), expected.transpose(2, 0, 1))
    assert tiered_imagenet.class_sizes(config)["val"] == {"n04": 2, "n05": 3}
    capped = load_suite("tiered-imagenet-5w1s", overrides={"data.images_per_class": 2}).data
    assert tiered_imagenet.load_split_images(capped)[0].counts == (2,) * 7


def test_missing_mismatched_or_tampered_files_are_refused_clearly(root):
    with pytest.raises(DataNotFound, match="train_images_png.pkl.*Ren et al.'s code"):
        tiered_imagenet.required_files(load_suite("tiered-imagenet-5w1s").data)
    for split in CLASSES:
        write_split(root, split, images_count=1 if split == "val" else None)
    with pytest.raises(BenchError, match="1 images but 5 labels"):
        tiered_imagenet.load_split_images(load_suite("tiered-imagenet-5w1s").data)

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    write_split(root, "val")
    (root / "test_labels.pkl").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(BenchError, match="refusing to load"):
        tiered_imagenet.load_split_images(load_suite("tiered-imagenet-5w1s").data)


def test_there_is_nothing_to_download_and_bench_says_where_to_get_it():
    from bench.datasets.download import downloads
    with pytest.raises(BenchError, match="no official download"):
        downloads("tiered-imagenet")
