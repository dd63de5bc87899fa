"""mini-ImageNet in both distributed formats, on fixtures generated from the real Ravi & Larochelle CSVs.

The images are not available here: each fixture keeps the first rows of every class of the real
split CSVs and gives them small random 84x84 JPEGs, then writes the same pixels as learn2learn's
pickles (stored in a shuffled order, as numpy 1 writes them).
"""

from __future__ import annotations

import csv
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.config import MiniImageNetData, load_suite
from bench.datasets import check_available, mini_imagenet
from bench.errors import BenchError

RAVI = Path(os.environ.get("BENCH_DATA_DIR", "")) / "mini-imagenet" / "splits" / "ravi"
pytestmark = pytest.mark.skipif(not (RAVI / "train.csv").is_file(), reason="BENCH_DATA_DIR has no Ravi split CSVs")
ROWS_PER_CLASS = 3
PICKLES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
           "test": "mini-imagenet-cache-test.pkl"}


def read_rows(path: Path) -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    with path.open(newline="") as handle:
        for filename, label in list(csv.reader(handle))[1:]:
            rows.setdefault(label, []).append(filename)
    return rows


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mini-data")
    csv_dir, image_dir = root / "mini-imagenet/splits/ravi", root / "mini-imagenet/images"
    csv_dir.mkdir(parents=True)
    image_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, pickle_name in PICKLES.items():
        rows = {label: files[:ROWS_PER_CLASS] for label, files in read_rows(RAVI / f"{split}.csv").items()}
        with (csv_dir / f"{split}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            writer.writerows((f, label) for label, files in rows.items() for f in files)
        decoded = {}
        for files in rows.values():
            for name in files:
                Image.fromarray(rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)).save(image_dir / name, quality=90)
                with Image.open(image_dir / name) as image:
                    decoded[name] = np.asarray(image.convert("RGB"))
        order = rng.permutation(len(decoded))  # storage order differs from class order
        names = list(decoded)
        position = {names[j]: i for i, j in enumerate(order)}
        payload = {"image_data": np.stack([decoded[names[j]] for j in order]),
                   "class_dict": {label: [position[f] for f in files] for label, files in rows.items()}}
        # Protocol 2 with numpy 1's module names, like the pickles in circulation.
        raw = pickle.dumps(payload, protocol=2).replace(b"cnumpy._core.", b"cnumpy.core.")
        (root / "mini-imagenet" / pickle_name).write_bytes(raw)
    return root


@pytest.fixture
def env(fixture_root, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(fixture_root))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return fixture_root


def config(fmt: str, **fields) -> MiniImageNetData:
    return MiniImageNetData(kind="mini-imagenet", format=fmt, **{"images_per_class": ROWS_PER_CLASS, **fields})


def test_both_formats_give_identical_tensors_and_the_ravi_class_split(env):
    folder, folder_splits = mini_imagenet.load_split_images(config("folder"))
    pickled, pickle_splits = mini_imagenet.load_split_images(config("pickle"))
    assert folder.images.shape == (100, ROWS_PER_CLASS, 3, 84, 84) and folder.images.dtype == torch.uint8
    assert torch.equal(folder.images, pickled.images) and folder.class_names == pickled.class_names
    assert folder_splits == pickle_splits
    for split in ("train", "val", "test"):
        rows = read_rows(RAVI / f"{split}.csv")
        assert sorted(folder.class_names[i].split("/")[1] for i in folder_splits[split]) == sorted(rows)
    assert [len(folder_splits[s]) for s in ("train", "val", "test")] == [64, 16, 20]
    # Each class holds its CSV rows, in order.
    first = folder_splits["test"][0]
    wnid = folder.class_names[first].split("/")[1]
    for i, name in enumerate(read_rows(env / "mini-imagenet/splits/ravi/test.csv")[wnid]):
        with Image.open(env / "mini-imagenet/images" / name) as image:
            assert np.array_equal(folder.images[first, i].numpy(), np.asarray(image.convert("RGB")).transpose(2, 0, 1))
    # Resizing is the same operation on the same pixels in both formats.
    small = [mini_imagenet.load_split_images(config(f, image_size=42))[0] for f in ("folder", "pickle")]
    assert small[0].images.shape[-2:] == (42, 42) and torch.equal(small[0].images, small[1].images)


def test_the_cache_is_reused_and_keyed_by_the_choices(env):
    first = mini_imagenet.load_classes(config("pickle"))
    again = mini_imagenet.load_classes(config("pickle"))
    assert first.key == again.key and torch.equal(first.images, again.images)
    fewer = mini_imagenet.load_classes(config("pickle", images_per_class=2))
    assert fewer.key != first.key and torch.equal(fewer.images, first.images[:, :2])
    assert len(list((Path(os.environ["BENCH_CACHE_DIR"])).glob("mini-imagenet-*.pt"))) == 2


def test_missing_data_names_what_to_download_and_where(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    for fmt in ("pickle", "folder"):
        suite = load_suite("mini-imagenet-5w1s", overrides={"data": {"kind": "mini-imagenet", "format": fmt}})
        with pytest.raises(BenchError) as error:
            check_available(suite)
        message = str(error.value)
        assert "\n" not in message and f"({fmt} format)" in message
        assert f"into {tmp_path / 'data/mini-imagenet'}/ (mini-imagenet-cache-train.pkl from https://" in message
        assert "drive.google.com" in message and str(tmp_path / "data/mini-imagenet/images") in message
        assert str(tmp_path / "data/mini-imagenet/splits/ravi") in message
    assert main(["run", "mini-imagenet-5w1s", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: mini-ImageNet data not found (pickle format)") and "mini-imagenet-cache-test.pkl" in err
    assert "\n" not in err


def test_incomplete_folder_and_hostile_pickles_are_clear_errors(env, tmp_path, monkeypatch):
    with pytest.raises(BenchError, match=r"class n\d+ has 3 images, fewer than images_per_class = 4"):
        mini_imagenet.load_classes(config("folder", images_per_class=4))
    root = tmp_path / "partial"
    (root / "mini-imagenet").mkdir(parents=True)
    (root / "mini-imagenet/splits").symlink_to(env / "mini-imagenet/splits")
    (root / "mini-imagenet/images").mkdir()
    monkeypatch.setenv("BENCH_DATA_DIR", str(root))
    with pytest.raises(BenchError, match=r"mini-ImageNet data not found \(folder format\): .*images/n\d+\.jpg"):
        mini_imagenet.load_classes(config("folder"))

    class Hostile:
        def __reduce__(self):
            return os.system, ("echo owned",)

    for name in PICKLES.values():
        (root / "mini-imagenet" / name).write_bytes(pickle.dumps({"image_data": Hostile(), "class_dict": {}}))
    with pytest.raises(BenchError, match=r"not a readable mini-ImageNet pickle \(refusing to load .*system\)"):
        mini_imagenet.load_classes(config("pickle"))


def test_the_suites_follow_the_published_protocol():
    one, five = load_suite("mini-imagenet-5w1s", tier="paper"), load_suite("mini-imagenet-5w5s", tier="paper")
    for suite in (one, five):
        assert suite.model.filters == 32 and (suite.ways, suite.queries, suite.test_tasks) == (5, 15, 600)
        assert suite.batch_norm == "transductive" and suite.data.images_per_class == 600
        unverified = {p.algorithm for p in suite.published if not p.verified}
        # those whose source numbers were not re-checked against a primary copy
        assert unverified == {"metasgd", "reptile", "mamlpp", "cavia", "feat", "versa"} | ({"imaml"} if suite is one else set())
    assert (one.shots, five.shots) == (1, 5)
    assert {p.algorithm: p.value for p in one.published}["maml"] == 48.70
    assert {p.algorithm: p.value for p in five.published}["protonet"] == 68.20
