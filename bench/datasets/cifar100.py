"""CIFAR-100 (Krizhevsky 2009), read directly from the official python archive, for CIFAR-FS and FC100.

The archive ``cifar-100-python.tar.gz`` holds three pickles under ``cifar-100-python/``: ``train``
(50,000 images) and ``test`` (10,000), each a dict of ``data`` (N x 3072 uint8, the red, green and
blue 32x32 planes of each image), ``fine_labels`` and ``coarse_labels``; and ``meta``, the label
names. The pickles are read with an unpickler that builds only plain containers and numpy arrays,
so a tampered archive cannot run code. The cache key is the archive's SHA-256: the bytes read.
"""

from __future__ import annotations

import io
import logging
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.config import CIFAR100_SUPERCLASSES, CIFAR100Data
from bench.datasets.base import FILTERS, SPLITS, ArrayUnpickler, ClassImages, cache_key, cached, data_dir, file_sha256
from bench.datasets.verify import verify_official
from bench.errors import BenchError, DataNotFound

log = logging.getLogger(__name__)

DOWNLOADS = {
    "cifar100/cifar-100-python.tar.gz": (
        "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "md5:eb9058c3a382ffc7106e4002c42a8d85",
    ),
}
ROOT = "cifar-100-python"
TRAIN_IMAGES, TEST_IMAGES = 500, 100  # per class in the archive


def required_files(config: CIFAR100Data) -> Path:
    path = data_dir() / config.archive
    how = "download it again with `python -m bench download cifar100 --force`"
    if not path.is_file():
        url, checksum = DOWNLOADS["cifar100/cifar-100-python.tar.gz"]
        raise DataNotFound(f"CIFAR-100 data not found: {path} does not exist; download it with `python -m bench "
                           f"download cifar100` (or fetch {url}, {checksum}, into {path} without unpacking it), or "
                           "set BENCH_DATA_DIR to a directory that has it")
    if config.archive in DOWNLOADS:
        verify_official(path, DOWNLOADS[config.archive][1], how)
    return path


def _read_pickles(path: Path) -> dict[str, dict[bytes, Any]]:
    try:
        with tarfile.open(path, "r:gz") as archive:
            out = {}
            for name in ("train", "test", "meta"):
                member = archive.extractfile(f"{ROOT}/{name}")
                if member is None:
                    raise KeyError(name)
                out[name] = ArrayUnpickler(io.BytesIO(member.read()), encoding="bytes").load()
            return out
    except KeyError as exc:
        raise BenchError(f"{path}: no {ROOT}/{exc.args[0]}; this is not the official CIFAR-100 python archive") from None
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise BenchError(f"{path}: cannot be read as the CIFAR-100 python archive ({exc}); download it again") from None


def _decode(path: Path, config: CIFAR100Data) -> ClassImages:
    parts = _read_pickles(path)
    try:
        names = [n.decode() for n in parts["meta"][b"fine_label_names"]]
        coarse_names = [n.decode() for n in parts["meta"][b"coarse_label_names"]]
        splits = [(np.asarray(parts[s][b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32),
                   np.asarray(parts[s][b"fine_labels"]), np.asarray(parts[s][b"coarse_labels"])) for s in ("train", "test")]
    except (KeyError, ValueError, AttributeError) as exc:
        raise BenchError(f"{path}: its pickles lack the official fields ({exc}); download the archive again") from None
    hierarchy: dict[str, set[str]] = {name: set() for name in coarse_names}
    for _, fine, coarse in splits:
        for f, c in set(zip(fine.tolist(), coarse.tolist(), strict=True)):
            hierarchy[coarse_names[c]].add(names[f])
    if {k: sorted(v) for k, v in hierarchy.items()} != {k: sorted(v) for k, v in CIFAR100_SUPERCLASSES.items()}:
        raise BenchError(f"{path}: its class hierarchy is not CIFAR-100's published one; download the archive again")
    size, count = config.image_size, config.images_per_class
    out = np.empty((len(names), count, 3, size, size), dtype=np.uint8)
    for label in range(len(names)):
        images = np.concatenate([data[fine == label] for data, fine, _ in splits])
        if len(images) < count:
            raise BenchError(f"{path}: class {names[label]} has {len(images)} images, fewer than images_per_class "
                             f"= {count}; lower images_per_class or download the archive again")
        for column, image in enumerate(images[:count]):
            if size != 32:
                image = np.asarray(Image.fromarray(image.transpose(1, 2, 0)).resize(
                    (size, size), FILTERS[config.resize_filter])).transpose(2, 0, 1)
            out[label, column] = image
    return ClassImages(torch.from_numpy(out), tuple(names))


def load_classes(config: CIFAR100Data) -> ClassImages:
    """All 100 classes (the archive's label order), ``images_per_class`` each, from the cache when it exists."""
    path = required_files(config)
    key = cache_key(dataset="cifar100", archive_sha256=file_sha256(path), per_class=config.images_per_class,
                    size=config.image_size, filter=config.resize_filter)
    return cached("cifar100", key, lambda: _decode(path, config))


def class_sizes(config: CIFAR100Data) -> dict[str, dict[str, int]]:
    """Images of each class of each split, as the suite file fixes them."""
    return {s: dict.fromkeys(config.split_classes.get(s, ()), config.images_per_class) for s in SPLITS}


def load_split_images(config: CIFAR100Data) -> tuple[ClassImages, dict[str, list[int]]]:
    data = load_classes(config)
    index = data.index()
    return data, {split: [index[c] for c in classes] for split, classes in config.split_classes.items()}
