"""Tiny-ImageNet-200: the 300-per-class subset in BENCH_DATA_DIR, and generated archives in the official layout."""

from __future__ import annotations

import io
import os
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.config import TinyImageNetData, load_suite
from bench.datasets import tiny_imagenet
from bench.errors import BenchError

SUBSET = Path(os.environ.get("BENCH_DATA_DIR", "")) / "tiny-imagenet" / "tiny-imagenet-200-train300.zip"
needs_subset = pytest.mark.skipif(not SUBSET.is_file(), reason="BENCH_DATA_DIR has no Tiny-ImageNet")


@pytest.fixture(scope="module")
def real_data():
    return tiny_imagenet.load_split_images(load_suite("tiny-imagenet-5w1s").data)


@needs_subset
def test_the_subset_loads_as_200_classes_of_300_rgb_images(real_data):
    data, splits = real_data
    assert data.images.shape == (200, 300, 3, 64, 64) and data.images.dtype == torch.uint8
    wnids = sorted(zipfile.ZipFile(SUBSET).read("tiny-imagenet-200/wnids.txt").decode().split())
    assert list(data.class_names) == wnids
    # About 2% of the JPEGs are grayscale: converted to RGB, their three channels are equal.
    gray = (data.images[:, :, 0] == data.images[:, :, 1]).flatten(2).all(-1) & (
        data.images[:, :, 1] == data.images[:, :, 2]).flatten(2).all(-1)
    assert 0.005 < gray.float().mean() < 0.05
    assert {s: len(v) for s, v in splits.items()} == {"train": 128, "val": 32, "test": 40}


@needs_subset
@pytest.mark.parametrize("suite", ["tiny-imagenet-5w1s", "tiny-imagenet-5w5s"])
def test_the_committed_split_is_the_seeded_128_32_40_split_of_wnids_txt(suite):
    split = load_suite(suite).data.split
    wnids = sorted(zipfile.ZipFile(SUBSET).read("tiny-imagenet-200/wnids.txt").decode().split())
    classes = [set(split[s]) for s in ("train", "val", "test")]
    assert [len(c) for c in classes] == [128, 32, 40] and set.union(*classes) == set(wnids)
    # The method recorded in the suite file's comment reproduces it.
    random.Random(2024).shuffle(wnids)
    assert classes == [set(wnids[:128]), set(wnids[128:160]), set(wnids[160:])]


def _jpeg(rng: np.random.Generator, gray: bool = False) -> bytes:
    pixels = rng.integers(0, 256, (64, 64) if gray else (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90)
    return out.getvalue()


def write_archive(path: Path, images: dict[str, int], full: bool = True, seed: int = 0) -> dict[str, list[bytes]]:
    """An archive in the official layout; ``full`` adds what the official zip has besides the train images."""
    # Image i of a class is the same in every archive, whatever the number of images.
    jpegs = {w: [_jpeg(np.random.default_rng([seed, int(w[1:]), i]), gray=(i == 1)) for i in range(n)]
             for w, n in images.items()}
    rng = np.random.default_rng(seed)
    members = [(f"tiny-imagenet-200/train/{w}/images/{w}_{i}.JPEG", data) for w, d in jpegs.items() for i, data in enumerate(d)]
    random.Random(seed).shuffle(members)  # member order must not matter
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "".join(f"{w}\n" for w in reversed(list(images))))
        archive.writestr("tiny-imagenet-200/words.txt", "".join(f"{w}\tthing {w}\n" for w in images))
        for name, data in members:
            archive.writestr(name, data)
        if full:
            for w in images:
                archive.writestr(f"tiny-imagenet-200/train/{w}/{w}_boxes.txt", f"{w}_0.JPEG\t0\t0\t63\t63\n")
            archive.writestr("tiny-imagenet-200/val/val_annotations.txt", f"val_0.JPEG\t{next(iter(images))}\t0\t0\t63\t63\n")
            archive.writestr("tiny-imagenet-200/val/images/val_0.JPEG", _jpeg(rng))
            archive.writestr("tiny-imagenet-200/test/images/test_0.JPEG", _jpeg(rng))
    return jpegs


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


WNIDS = ("n00000001", "n00000002", "n00000003")


def config(archive: str, per_class: int, **fields) -> TinyImageNetData:
    return TinyImageNetData(kind="tiny-imagenet", archives=(archive, "tiny-imagenet/other.zip"), images_per_class=per_class,
                            split={"train": WNIDS[:1], "val": WNIDS[1:2], "test": WNIDS[2:]}, **fields)


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    # Generated archives under the official name: past the checksum check, to the decoder's own checks.
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")
    return tmp_path / "data"


def test_a_full_layout_archive_gives_the_first_images_by_index(data_root):
    # 12 images per class: the first 11 by index are 0..10, not the first 11 names in text order.
    jpegs = write_archive(data_root / "tiny-imagenet/tiny-imagenet-200.zip", dict.fromkeys(WNIDS, 12))
    data, splits = tiny_imagenet.load_split_images(config("tiny-imagenet/tiny-imagenet-200.zip", 11))
    assert data.class_names == WNIDS and splits == {"train": [0], "val": [1], "test": [2]}
    assert data.images.shape == (3, 11, 3, 64, 64)
    for c, wnid in enumerate(WNIDS):
        expected = np.stack([decoded(j) for j in jpegs[wnid][:11]])
        assert np.array_equal(data.images[c].numpy(), expected), wnid
    assert torch.equal(data.images[0, 1, 0], data.images[0, 1, 2])  # the grayscale JPEG, as RGB


def test_the_subset_and_the_full_archive_share_tensor_key_and_cache(data_root):
    write_archive(data_root / "tiny-imagenet/tiny-imagenet-200.zip", dict.fromkeys(WNIDS, 6))
    write_archive(data_root / "tiny-imagenet/subset.zip", dict.fromkeys(WNIDS, 4), full=False)
    full, _ = tiny_imagenet.load_split_images(config("tiny-imagenet/tiny-imagenet-200.zip", 4))
    subset, _ = tiny_imagenet.load_split_images(config("tiny-imagenet/subset.zip", 4))
    assert torch.equal(full.images, subset.images) and full.key == subset.key
    assert len(list((data_root.parent / "cache").glob("tiny-imagenet-*.pt"))) == 1
    resized, _ = tiny_imagenet.load_split_images(config("tiny-imagenet/subset.zip", 4, image_size=32))
    assert resized.images.shape == (3, 4, 3, 32, 32) and resized.key != full.key


def test_too_few_images_per_class_and_unknown_split_classes_are_clear_errors(data_root):
    write_archive(data_root / "tiny-imagenet/a.zip", {WNIDS[0]: 5, WNIDS[1]: 3, WNIDS[2]: 5})
    with pytest.raises(BenchError, match=r"a\.zip: class n00000002 has 3 train images, fewer than images_per_class = 5"):
        tiny_imagenet.load_split_images(config("tiny-imagenet/a.zip", 5))
    bad = config("tiny-imagenet/a.zip", 3).model_copy(update={"split": {"train": ("n09999999",)}})
    with pytest.raises(BenchError, match="n09999999, which is not a class"):
        tiny_imagenet.load_split_images(bad)


def test_missing_corrupt_and_damaged_archives_are_one_line_errors(data_root):
    with pytest.raises(BenchError) as missing:
        tiny_imagenet.load_split_images(config("tiny-imagenet/tiny-imagenet-200.zip", 2))
    message = str(missing.value)
    assert "\n" not in message and str(data_root / "tiny-imagenet/tiny-imagenet-200.zip") in message
    assert "python -m bench download tiny-imagenet" in message and tiny_imagenet.DOWNLOADS[
        "tiny-imagenet/tiny-imagenet-200.zip"][0] in message

    html = data_root / "tiny-imagenet/tiny-imagenet-200.zip"
    html.parent.mkdir(parents=True)
    html.write_bytes(b"<html>404 Not Found</html>")
    with pytest.MonkeyPatch.context() as checked:
        checked.delenv("BENCH_UNVERIFIED_DATA")
        with pytest.raises(BenchError, match=rf"^{html} does not match its official checksum \(md5:90528d"):
            tiny_imagenet.load_split_images(config("tiny-imagenet/tiny-imagenet-200.zip", 2))
    with pytest.raises(BenchError, match=rf"^{html}: not a readable zip archive .*download it again$"):
        tiny_imagenet.load_split_images(config("tiny-imagenet/tiny-imagenet-200.zip", 2))

    # A flipped byte inside a stored JPEG fails its CRC-32 when decoded.
    write_archive(html, dict.fromkeys(WNIDS, 2))
    with zipfile.ZipFile(html) as archive:
        info = archive.getinfo(f"tiny-imagenet-200/train/{WNIDS[2]}/images/{WNIDS[2]}_1.JPEG")
    raw = bytearray(html.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.compress_size // 2] ^= 0xFF
    html.write_bytes(bytes(raw))
    with pytest.raises(BenchError, match=rf"member .*{WNIDS[2]}_1\.JPEG cannot be decoded .*download the archive again"):
        tiny_imagenet.load_split_images(config("tiny-imagenet/tiny-imagenet-200.zip", 2))


def test_bench_run_stops_with_the_download_message_when_the_archive_is_missing(data_root, tmp_path, capsys):
    assert main(["run", "tiny-imagenet-5w1s", "--tier", "smoke", "--results-dir", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "Tiny-ImageNet data not found" in err and "python -m bench download tiny-imagenet" in err
