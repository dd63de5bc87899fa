"""Bring your own images: a generated folder of class folders runs as a suite with no code, and
every kind of bad folder is one line, exit 2, before any work."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.config import load_suite
from bench.datasets import image_folder
from tests.conftest import read_records

SUITE = """\
name: my-images
version: 1
description: "a generated folder of images"
task_type: classification
protocol: byo-images
data:
  kind: image-folder
  root: {root}
  image_size: 16
{data_extra}  split: {split}
model: {{kind: conv4, filters: 8}}
batch_norm: transductive
metric: accuracy
ways: 3
shots: 1
queries: 2
meta_batch_size: 2
meta_iterations: 30
val_every: 15
val_tasks: 10
test_tasks: 30
test_inner_steps: 2
seeds: [0]
tiers:
  smoke: {{}}
  standard: {{}}
  paper: {{}}
"""
CLASSES = [f"class{c:02d}" for c in range(12)]
SPLIT = {"train": CLASSES[:6], "val": CLASSES[6:9], "test": CLASSES[9:]}


def image(c: int, i: int, mode: str = "RGB") -> Image.Image:
    """Class c's colour with noise, in a size of its own: a learner separates the classes by colour."""
    rng = np.random.default_rng(100 * c + i)
    colour = np.array([(c * 67) % 256, (c * 131) % 256, (c * 199) % 256], dtype=float)
    height, width = 20 + 3 * (i % 4), 24 + 5 * (c % 3)
    pixels = np.clip(colour + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def generated_folder(directory: Path, sizes: dict[str, int] | None = None, subfolders: bool = False) -> Path:
    """Classes of 4 to 8 images, PNG and JPEG mixed; returns the folder."""
    root = directory / "images"
    for c, name in enumerate(CLASSES):
        split = next(s for s, names in SPLIT.items() if name in names)
        folder = root / split / name if subfolders else root / name
        folder.mkdir(parents=True)
        for i in range((sizes or {}).get(name, 4 + c % 5)):
            image(c, i).save(folder / f"img{i:02d}.{'png' if i % 2 else 'jpg'}")
    (root / CLASSES[0] if not subfolders else root / "train" / CLASSES[0]).joinpath(".DS_Store").write_bytes(b"\0junk")
    return root


def suite_file(directory: Path, root: Path, subfolders: bool = False, data_extra: str = "",
               split: dict | None = None) -> Path:
    split_text = "subfolders" if subfolders else "{" + ", ".join(
        f"{s}: [{', '.join(names)}]" for s, names in (split or SPLIT).items()) + "}"
    path = directory / "my-images.yaml"
    path.write_text(SUITE.format(root=root, split=split_text, data_extra=data_extra))
    return path


def test_a_folder_of_your_own_images_is_a_suite_without_code(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    suite = suite_file(tmp_path, generated_folder(tmp_path))
    loaded = load_suite(str(suite))
    sizes = image_folder.class_sizes(loaded.data)
    assert sizes["test"] == {"class09": 8, "class10": 4, "class11": 5}  # the hidden file is no image
    assert cli("validate", str(suite))[0] == 0
    code, out, err = cli("run", str(suite), "--algorithms", "protonet", "--results-dir", str(tmp_path / "results"))
    assert code == 0, err
    (record,) = read_records(tmp_path / "results")
    assert record["status"] == "completed" and record["suite"]["protocol"]["data"]["kind"] == "image-folder"
    assert record["metric"]["mean"] > 60, record["metric"]  # chance is 33%: the colours separate the classes
    assert len(list((tmp_path / "cache").glob("image-folder-*.pt"))) == 1
    # The same folder as train/ val/ test/ subfolders: the same classes and sizes.
    other = tmp_path / "other"
    other.mkdir()
    subfolders = suite_file(other, generated_folder(other, subfolders=True), subfolders=True)
    assert image_folder.class_sizes(load_suite(str(subfolders)).data) == sizes


def test_the_cache_is_keyed_by_every_image_s_bytes(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = generated_folder(tmp_path)
    suite = load_suite(str(suite_file(tmp_path, root)))
    first, _ = image_folder.load_split_images(suite.data)
    assert first.counts is not None and first.images.shape[1:] == (8, 3, 16, 16)
    assert image_folder.load_split_images(suite.data)[0].key == first.key  # reused
    image(3, 0).rotate(90).save(root / "class03" / "img00.jpg")
    edited, _ = image_folder.load_split_images(suite.data)
    assert edited.key != first.key and len(list((tmp_path / "cache").glob("image-folder-*.pt"))) == 2
    row = edited.class_names.index("class03")
    assert not np.array_equal(edited.images[row, 0].numpy(), first.images[row, 0].numpy())
    assert np.array_equal(edited.images[row, 1:].numpy(), first.images[row, 1:].numpy())


def _corrupt(root: Path) -> None:
    (root / "class10" / "img01.png").write_bytes(b"this is not a picture")


def _truncated(root: Path) -> None:
    buffer = io.BytesIO()
    image(10, 1).resize((64, 64)).save(buffer, format="PNG")
    (root / "class10" / "img01.png").write_bytes(buffer.getvalue()[:300])


def _grey(root: Path) -> None:
    image(4, 2, mode="L").save(root / "class04" / "img02.png")


def _empty(root: Path) -> None:
    for path in (root / "class07").iterdir():
        path.unlink()


def _small(root: Path) -> None:
    for path in sorted((root / "class11").iterdir())[2:]:
        path.unlink()


BAD_FOLDERS = [
    (_corrupt, "", None, "class10/img01.png: cannot be read as an image"),
    (_truncated, "", None, "class10/img01.png: cannot be read as an image"),
    (_grey, "", None, "mixed channel counts"),
    (_empty, "", None, "class folder"),
    (_small, "", None, "class 'class11' of split 'test' has 2 examples, fewer than shots + queries = 3"),
    (None, "", {**SPLIT, "test": ["class09", "class10", "dogs"]}, "split 'test' lists class 'dogs', which is not a folder"),
    (None, "", {**SPLIT, "test": ["class09", "class10", "class00"]}, "class class00 is listed twice"),
    (None, "  mean: [0.5, 0.5]\n  std: [0.2, 0.2]\n", None, "data.mean and data.std have 2 values, the images 3 channel(s)"),
]


@pytest.mark.parametrize(("damage", "data_extra", "split", "message"), BAD_FOLDERS)
def test_a_bad_image_folder_is_one_line_and_exit_2_before_any_work(cli, tmp_path, monkeypatch, damage, data_extra,
                                                                   split, message):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = generated_folder(tmp_path)
    if damage:
        damage(root)
    suite = suite_file(tmp_path, root, data_extra=data_extra, split=split)
    code, _, err = cli("run", str(suite), "--algorithms", "protonet", "--results-dir", str(tmp_path / "results"))
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "results").exists()


def test_grey_and_colour_images_are_converted_when_channels_are_given(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = generated_folder(tmp_path)
    _grey(root)
    data, _ = image_folder.load_split_images(load_suite(str(suite_file(tmp_path, root, data_extra="  channels: 1\n"))).data)
    assert data.images.shape[2] == 1
    data, _ = image_folder.load_split_images(load_suite(str(suite_file(tmp_path, root, data_extra="  channels: 3\n"))).data)
    assert data.images.shape[2] == 3


def test_subfolders_need_all_three_splits(tmp_path, cli):
    root = generated_folder(tmp_path, subfolders=True)
    shutil.rmtree(root / "val")
    code, _, err = cli("validate", str(suite_file(tmp_path, root, subfolders=True)))
    assert code == 2 and "split: subfolders needs" in err and "/val/" in err, err
