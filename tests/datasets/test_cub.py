"""CUB-200-2011: generated archives in the official layout (the real one is not on our machines), Chen
et al.'s split rule, and refusals of a missing, damaged or foreign archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.config import load_suite
from bench.datasets import cub
from bench.errors import BenchError, DataNotFound

CLASSES = [f"{i + 1:03d}.Bird_{chr(65 + i)}" for i in range(8)]
COUNTS = [2, 3, 4, 2, 3, 4, 2, 3]


def jpeg(seed: int, size: tuple[int, int]) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def write_archive(path: Path, damaged: str | None = None) -> dict[str, bytes]:
    files = {}
    for index, (name, count) in enumerate(zip(CLASSES, COUNTS, strict=True)):
        for image in reversed(range(count)):  # stored out of name order: the reader sorts
            files[f"CUB_200_2011/images/{name}/{name[4:]}_{image:04d}.jpg"] = jpeg(100 * index + image,
                                                                                  (40 + 7 * image, 30 + 5 * index))
    if damaged:
        files[damaged] = b"not a jpeg"
    extra = {"CUB_200_2011/classes.txt": "\n".join(f"{i + 1} {n}" for i, n in enumerate(CLASSES)).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in {**extra, **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return files


@pytest.fixture
def archive(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")  # a generated archive cannot have the official MD5
    return tmp_path / "data" / "cub" / "CUB_200_2011.tgz"


def test_chen_et_al_s_rule_splits_the_200_classes_100_50_50():
    split = cub.split_of([f"{i:03d}" for i in range(200)])
    assert [len(split[s]) for s in ("train", "val", "test")] == [100, 50, 50]
    assert split["train"][:3] == ["000", "002", "004"] and split["val"][:2] == ["001", "005"]
    assert split["test"][:2] == ["003", "007"]
    assert len({c for names in split.values() for c in names}) == 200


def test_the_archive_decodes_each_class_s_images_in_name_order(archive):
    files = write_archive(archive)
    config = load_suite("cub-5w1s").data
    data, splits = cub.load_split_images(config)
    assert list(data.class_names) == CLASSES and data.counts == tuple(COUNTS)
    assert data.images.shape == (8, 4, 3, 84, 84)
    assert {s: [data.class_names[i] for i in v] for s, v in splits.items()} == {
        "train": CLASSES[0::2], "val": CLASSES[1::4], "test": CLASSES[3::4]}
    member = f"CUB_200_2011/images/{CLASSES[2]}/{CLASSES[2][4:]}_0001.jpg"
    with Image.open(io.BytesIO(files[member])) as image:
        expected = np.asarray(image.convert("RGB").resize((84, 84), Image.Resampling.LANCZOS)).transpose(2, 0, 1)
    assert np.array_equal(data.images[2, 1].numpy(), expected)
    assert not data.images[0, 2:].any()  # padding past a class's images
    assert cub.class_sizes(config)["val"] == {CLASSES[1]: COUNTS[1], CLASSES[5]: COUNTS[5]}
    assert np.array_equal(cub.load_split_images(config)[0].images.numpy(), data.images.numpy())  # from the cache


def test_a_missing_damaged_or_foreign_archive_is_refused_clearly(archive, monkeypatch):
    config = load_suite("cub-5w1s").data
    with pytest.raises(DataNotFound, match="bench download cub.*data.caltech.edu"):
        cub.required_files(config)
    write_archive(archive, damaged=f"CUB_200_2011/images/{CLASSES[0]}/zz_broken.jpg")
    with pytest.raises(BenchError, match="zz_broken.jpg cannot be decoded"):
        cub.load_split_images(config)
    archive.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(BenchError, match="cannot be read as the CUB-200-2011 archive"):
        cub.listing(archive)
    monkeypatch.delenv("BENCH_UNVERIFIED_DATA")
    write_archive(archive)
    with pytest.raises(BenchError, match="official checksum"):
        cub.required_files(config)
