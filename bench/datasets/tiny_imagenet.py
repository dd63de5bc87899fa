"""Tiny-ImageNet-200 (Stanford CS231n), read directly from the official zip archive.

The archive holds ``tiny-imagenet-200/{wnids.txt,words.txt,train/<wnid>/images/<wnid>_<i>.JPEG}``
(64x64 JPEG, 500 per class; about 2% are grayscale and are converted to RGB), plus ``val/`` and
``test/``, which few-shot use ignores: the suite's split is over the 200 train classes. Each class
keeps its images of index 0..``images_per_class``-1, so the official archive and the
300-per-class subset of it give the same tensor.

The cache key is built from the zip's central directory (names, sizes and CRC-32s of the members
used) rather than from the archive's bytes: the two archives then share one cache and the same
episode hashes, and a cached load does not read the whole archive. The CRC-32s are checked when
members are decoded, so a damaged member still fails loudly.
"""

from __future__ import annotations

import io
import logging
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.config import TinyImageNetData
from bench.datasets.base import FILTERS, SPLITS, ZIP_ERRORS, ClassImages, cache_key, cached, data_dir
from bench.datasets.verify import verify_official
from bench.errors import BenchError, DataNotFound

log = logging.getLogger(__name__)

# Official source. The MD5 is the well-known one of the FULL archive (500 train images per class,
# with val/ and test/); the 300-per-class subset shipped for offline CI has a different checksum.
DOWNLOADS = {
    "tiny-imagenet/tiny-imagenet-200.zip": (
        "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
        "md5:90528d7ca1a48142e341f4ef8d21d0de",
    ),
}
ROOT = "tiny-imagenet-200"
TRAIN_MEMBER = re.compile(rf"^{ROOT}/train/(n\d+)/images/(n\d+)_(\d+)\.JPEG$")


def required_files(config: TinyImageNetData) -> Path:
    """The first of the config's candidate archives that exists; the official one is checked against
    its checksum (others, such as a 300-per-class subset, have none: each member's CRC-32 is checked as
    it is read, and the cache key covers the members' listing)."""
    candidates = [data_dir() / a for a in config.archives]
    for relative, path in zip(config.archives, candidates, strict=True):
        if path.is_file():
            if relative in DOWNLOADS:
                verify_official(path, DOWNLOADS[relative][1], "download it again with `python -m bench download "
                                "tiny-imagenet --force`")
            return path
    [(relative, (url, checksum))] = DOWNLOADS.items()
    raise DataNotFound(
        f"Tiny-ImageNet data not found: none of {', '.join(map(str, candidates))} exists; download it with "
        f"`python -m bench download tiny-imagenet` (or fetch {url}, {checksum}, into {data_dir() / relative} "
        "without unpacking it), or set BENCH_DATA_DIR to a directory that has it"
    )


def _open(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except ZIP_ERRORS as exc:
        raise BenchError(f"{path}: not a readable zip archive ({exc}); download it again") from None


def _select(path: Path, archive: zipfile.ZipFile, n_per_class: int) -> dict[str, list[zipfile.ZipInfo]]:
    """wnid -> the members of its first ``n_per_class`` train images by index, wnids sorted."""
    try:
        wnids = sorted(archive.read(f"{ROOT}/wnids.txt").decode().split())
    except KeyError:
        raise BenchError(f"{path}: no {ROOT}/wnids.txt; this is not the official Tiny-ImageNet-200 archive") from None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: {ROOT}/wnids.txt cannot be read ({exc}); download the archive again") from None
    by_class: dict[str, dict[int, zipfile.ZipInfo]] = {w: {} for w in wnids}
    for info in archive.infolist():
        match = TRAIN_MEMBER.match(info.filename)
        if match and match[1] == match[2] and match[1] in by_class:
            by_class[match[1]][int(match[3])] = info
    selected = {}
    for wnid, members in by_class.items():
        if len(members) < n_per_class:
            raise BenchError(f"{path}: class {wnid} has {len(members)} train images, fewer than images_per_class "
                             f"= {n_per_class}; lower images_per_class or download the full archive again")
        selected[wnid] = [members[i] for i in sorted(members)[:n_per_class]]
    if not selected:
        raise BenchError(f"{path}: wnids.txt lists no classes; download the archive again")
    return selected


def _decode(path: Path, selected: dict[str, list[zipfile.ZipInfo]], config: TinyImageNetData) -> ClassImages:
    started = time.perf_counter()
    size = config.image_size
    wnids = list(selected)
    out = np.empty((len(wnids), config.images_per_class, 3, size, size), dtype=np.uint8)
    with _open(path) as archive:
        for row, wnid in enumerate(wnids):
            for column, info in enumerate(selected[wnid]):
                try:
                    with Image.open(io.BytesIO(archive.read(info))) as image:
                        rgb = image.convert("RGB")
                except ZIP_ERRORS as exc:
                    raise BenchError(f"{path}: member {info.filename} cannot be decoded ({exc}); "
                                     "download the archive again") from None
                if rgb.size != (size, size):
                    rgb = rgb.resize((size, size), FILTERS[config.resize_filter])
                out[row, column] = np.asarray(rgb).transpose(2, 0, 1)
    log.info("decoded %d Tiny-ImageNet images in %.1f s", out.shape[0] * out.shape[1], time.perf_counter() - started)
    return ClassImages(torch.from_numpy(out), tuple(wnids))


def load_classes(config: TinyImageNetData) -> ClassImages:
    """All classes of wnids.txt (sorted), ``images_per_class`` each, from the cache when it exists."""
    path = required_files(config)
    with _open(path) as archive:
        selected = _select(path, archive, config.images_per_class)
    members = [(info.filename, info.file_size, info.CRC) for infos in selected.values() for info in infos]
    key = cache_key(dataset="tiny-imagenet", members=members, size=config.image_size, filter=config.resize_filter)
    return cached("tiny-imagenet", key, lambda: _decode(path, selected, config))


def class_sizes(config: TinyImageNetData) -> dict[str, dict[str, int]]:
    """Images of each class of each split, as the suite file fixes them."""
    return {s: dict.fromkeys(config.split.get(s, ()), config.images_per_class) for s in SPLITS}


def load_split_images(config: TinyImageNetData) -> tuple[ClassImages, dict[str, list[int]]]:
    """All classes as one ClassImages, and each split's class indices into it."""
    data = load_classes(config)
    index = data.index()
    unknown = [w for wnids in config.split.values() for w in wnids if w not in index]
    if unknown:
        raise BenchError(f"Tiny-ImageNet split lists {unknown[0]}, which is not a class of the archive's wnids.txt")
    return data, {split: [index[w] for w in wnids] for split, wnids in config.split.items()}
