"""tieredImageNet (Ren et al. 2018) from the pickles of Ren et al.'s code, the de facto distribution.

Each split has ``<split>_images_png.pkl``, a sequence of PNG-encoded images (uint8 arrays of the
file bytes), and ``<split>_labels.pkl``, a dict whose ``label_specific`` gives each image's class
index within the split and ``label_specific_str`` the class names (``label_general`` and its names,
the 34 categories the split is made of, are not needed). They are read with an unpickler that
builds only containers and numpy arrays. The cache key covers the SHA-256 of the six files: the
bytes read.
"""

from __future__ import annotations

import io
import logging
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.config import TieredImageNetData
from bench.datasets.base import FILTERS, SPLITS, ArrayUnpickler, ClassImages, cache_key, cached, data_dir, file_sha256
from bench.errors import BenchError, DataNotFound

log = logging.getLogger(__name__)

DOWNLOADS: dict[str, tuple[str, str]] = {}  # no official source: see required_files' message
WHERE = ("the pickles of Ren et al.'s code (https://github.com/renmengye/few-shot-ssl-public, \"tieredImageNet\"; "
         "the authors share them, no official download exists)")


def paths(config: TieredImageNetData) -> dict[str, tuple[Path, Path]]:
    root = data_dir() / config.pickle_dir
    return {split: (root / f"{split}_images_png.pkl", root / f"{split}_labels.pkl") for split in SPLITS}


def required_files(config: TieredImageNetData) -> dict[str, tuple[Path, Path]]:
    found = paths(config)
    missing = [str(p) for pair in found.values() for p in pair if not p.is_file()]
    if missing:
        raise DataNotFound(f"tieredImageNet data not found: {', '.join(missing)}; put {WHERE} into "
                           f"{data_dir() / config.pickle_dir}/, or set BENCH_DATA_DIR to a directory that has them")
    return found


def _load(path: Path) -> Any:
    try:
        with path.open("rb") as handle:
            return ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise BenchError(f"{path}: not a readable tieredImageNet pickle ({exc}); fetch it again") from None


def _labels(path: Path) -> tuple[np.ndarray, list[str]]:
    raw = _load(path)
    try:
        labels = np.asarray(raw["label_specific"], dtype=np.int64)
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw["label_specific_str"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{path}: no label_specific / label_specific_str ({exc}); this is not a tieredImageNet "
                         "labels pickle") from None
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise BenchError(f"{path}: label_specific has labels outside its {len(names)} class names; fetch it again")
    return labels, names


def _rows(labels: np.ndarray, n_classes: int, limit: int | None) -> list[list[int]]:
    """Each class's image positions, in the pickle's order, the first ``limit`` of them."""
    rows: list[list[int]] = [[] for _ in range(n_classes)]
    for position, label in enumerate(labels.tolist()):
        rows[label].append(position)
    return [row[:limit] for row in rows]


def _decode(found: dict[str, tuple[Path, Path]], config: TieredImageNetData) -> ClassImages:
    started = time.perf_counter()
    size, names, blocks, counts = config.image_size, [], [], []
    for split in SPLITS:
        images_path, labels_path = found[split]
        labels, split_names = _labels(labels_path)
        images = _load(images_path)
        if len(images) != len(labels):
            raise BenchError(f"{images_path}: {len(images)} images but {len(labels)} labels in {labels_path.name}; "
                             "the two files do not belong together")
        for name, row in zip(split_names, _rows(labels, len(split_names), config.images_per_class), strict=True):
            if not row:
                raise BenchError(f"{labels_path}: class {name} has no image; fetch the files again")
            decoded = np.empty((len(row), 3, size, size), dtype=np.uint8)
            for column, position in enumerate(row):
                try:
                    with Image.open(io.BytesIO(np.asarray(images[position], dtype=np.uint8).tobytes())) as image:
                        rgb = image.convert("RGB")
                except OSError as exc:
                    raise BenchError(f"{images_path}: image {position} cannot be decoded ({exc}); fetch it again") from None
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), FILTERS[config.resize_filter])
                decoded[column] = np.asarray(rgb).transpose(2, 0, 1)
            names.append(f"{split}/{name}")
            blocks.append(decoded)
            counts.append(len(row))
    out = np.zeros((len(blocks), max(counts), 3, size, size), dtype=np.uint8)
    for index, block in enumerate(blocks):
        out[index, : len(block)] = block
    log.info("decoded %d tieredImageNet images in %.1f s", sum(counts), time.perf_counter() - started)
    return ClassImages(torch.from_numpy(out), tuple(names), counts=tuple(counts))


def load_classes(config: TieredImageNetData) -> ClassImages:
    """Every class of the three splits (named ``split/class``), from the cache when it exists."""
    found = required_files(config)
    key = cache_key(dataset="tiered-imagenet", files={f"{s}/{p.name}": file_sha256(p) for s, pair in found.items()
                                                      for p in pair},
                    per_class=config.images_per_class, size=config.image_size, filter=config.resize_filter)
    return cached("tiered-imagenet", key, lambda: _decode(found, config))


def class_sizes(config: TieredImageNetData) -> dict[str, dict[str, int]]:
    """Images of each class of each split, from the labels pickles alone (no image decoded)."""
    sizes = {}
    for split, (_, labels_path) in required_files(config).items():
        labels, names = _labels(labels_path)
        sizes[split] = {name: len(row) for name, row in zip(names, _rows(labels, len(names), config.images_per_class),
                                                            strict=True)}
    return sizes


def load_split_images(config: TieredImageNetData) -> tuple[ClassImages, dict[str, list[int]]]:
    data = load_classes(config)
    return data, {split: [i for i, name in enumerate(data.class_names) if name.startswith(f"{split}/")]
                  for split in SPLITS}
