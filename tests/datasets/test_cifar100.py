"""CIFAR-100 for CIFAR-FS and FC100: generated archives in the official python format (the real one is
not on our machines), their splits, and refusals of a missing, damaged, tampered or foreign archive."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bench.config import CIFAR100_SUPERCLASSES, load_suite
from bench.datasets import cifar100
from bench.errors import BenchError, DataNotFound

FINE = sorted(c for classes in CIFAR100_SUPERCLASSES.values() for c in classes)  # the archive's label order
COARSE = sorted(CIFAR100_SUPERCLASSES)
COARSE_OF = {c: COARSE.index(s) for s, classes in CIFAR100_SUPERCLASSES.items() for c in classes}
TRAIN, TEST = 3, 1  # images per class in the fixture (the official archive: 500 and 100)


def pixel(label: int, index: int, split: str) -> np.ndarray:
    """A recognisable 3x32x32 image: its class, index and split in its first pixels."""
    rng = np.random.default_rng([label, index, split == "test"])
    image = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    image[0, 0, :3] = (label, index, split == "test")
    return image


def write_archive(path: Path, hierarchy=COARSE_OF, extra: bytes | None = None) -> Path:
    parts = {}
    for split, count in (("train", TRAIN), ("test", TEST)):
        labels = [label for index in range(count) for label in range(len(FINE))]  # interleaved, as the archive is
        indices = [index for index in range(count) for _ in FINE]
        data = np.stack([pixel(label, index, split).reshape(-1) for label, index in zip(labels, indices, strict=True)])
        parts[split] = {b"data": data, b"fine_labels": labels, b"coarse_labels": [hierarchy[FINE[i]] for i in labels]}
    parts["meta"] = {b"fine_label_names": [n.encode() for n in FINE], b"coarse_label_names": [n.encode() for n in COARSE]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, value in parts.items():
            payload = extra if (extra is not None and name == "meta") else pickle.dumps(value)
            info = tarfile.TarInfo(f"cifar-100-python/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")  # a generated archive cannot have the official MD5
    return tmp_path / "data"


def suite_data(name: str):
    return load_suite(name, overrides={"data.images_per_class": TRAIN + TEST}).data


@pytest.mark.parametrize(("suite", "sizes"), [("cifar-fs-5w1s", (64, 16, 20)), ("fc100-5w1s", (60, 20, 20))])
def test_the_splits_read_each_class_s_train_then_test_images(data_dir, suite, sizes):
    write_archive(data_dir / "cifar100" / "cifar-100-python.tar.gz")
    config = suite_data(suite)
    data, splits = cifar100.load_split_images(config)
    assert data.images.shape == (100, TRAIN + TEST, 3, 32, 32) and list(data.class_names) == FINE
    assert tuple(len(splits[s]) for s in ("train", "val", "test")) == sizes
    assert len({i for v in splits.values() for i in v}) == sum(sizes)  # disjoint
    for label in (0, 57, 99):
        for column in range(TRAIN + TEST):
            split, index = ("train", column) if column < TRAIN else ("test", column - TRAIN)
            assert np.array_equal(data.images[label, column].numpy(), pixel(label, index, split))
    if suite.startswith("fc100"):  # no superclass spans two splits
        superclasses = {s: {COARSE_OF[data.class_names[i]] for i in v} for s, v in splits.items()}
        assert not (superclasses["train"] & superclasses["test"]) and not (superclasses["val"] & superclasses["test"])
        assert {COARSE[c] for c in superclasses["test"]} == {"aquatic_mammals", "insects", "medium_mammals", "people"}
    else:
        assert {data.class_names[i] for i in splits["test"]} >= {"whale", "rocket", "plain"}
    # the cached copy gives the same tensor
    assert np.array_equal(cifar100.load_split_images(config)[0].images.numpy(), data.images.numpy())
    sizes_per_split = cifar100.class_sizes(config)
    assert {s: len(v) for s, v in sizes_per_split.items()} == dict(zip(("train", "val", "test"), sizes, strict=True))


def test_a_missing_archive_says_where_to_get_it(data_dir):
    with pytest.raises(DataNotFound, match="bench download cifar100.*cs.toronto.edu"):
        cifar100.required_files(suite_data("cifar-fs-5w1s"))


def test_the_official_archive_is_checked_against_its_md5(data_dir, monkeypatch):
    monkeypatch.delenv("BENCH_UNVERIFIED_DATA")
    write_archive(data_dir / "cifar100" / "cifar-100-python.tar.gz")
    with pytest.raises(BenchError, match="official checksum"):
        cifar100.required_files(suite_data("cifar-fs-5w1s"))


def test_a_tampered_pickle_cannot_run_code(data_dir):
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    write_archive(data_dir / "cifar100" / "cifar-100-python.tar.gz", extra=pickle.dumps({b"x": Exploit()}))
    with pytest.raises(BenchError, match="posix.system|os.system|never do"):
        cifar100.load_split_images(suite_data("cifar-fs-5w1s"))


def test_a_foreign_hierarchy_or_too_few_images_are_refused(data_dir):
    swapped = dict(COARSE_OF) | {"whale": COARSE_OF["rocket"]}
    write_archive(data_dir / "cifar100" / "cifar-100-python.tar.gz", hierarchy=swapped)
    with pytest.raises(BenchError, match="hierarchy"):
        cifar100.load_split_images(suite_data("cifar-fs-5w1s"))
    write_archive(data_dir / "cifar100" / "cifar-100-python.tar.gz")
    with pytest.raises(BenchError, match="fewer than images_per_class"):
        cifar100.load_split_images(load_suite("cifar-fs-5w1s").data)  # 600 per class asked, 4 there


def test_an_unknown_class_in_a_split_is_refused_with_a_suggestion():
    with pytest.raises(BenchError, match="whalee.*whale"):
        load_suite("cifar-fs-5w1s", overrides={"data.split.test": ["whalee"]})
