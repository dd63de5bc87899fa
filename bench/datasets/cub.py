"""CUB-200-2011 (Wah et al. 2011), read directly from the official ``CUB_200_2011.tgz``.

The archive holds ``CUB_200_2011/images/<NNN.Class_Name>/<image>.jpg`` (11,788 JPEGs of various
sizes, 41 to 60 per class) beside annotations few-shot use ignores. The listing is read from the tar
headers, without decoding; the images are decoded once, resized, and cached, keyed by the archive's
SHA-256 (the bytes read) and the preprocessing.
"""

from __future__ import annotations

import io
import logging
import re
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.config import CUBData, SplitName
from bench.datasets.base import FILTERS, SPLITS, ClassImages, cache_key, cached, data_dir, file_sha256
from bench.datasets.verify import verify_official
from bench.errors import BenchError, DataNotFound

log = logging.getLogger(__name__)

DOWNLOADS = {
    "cub/CUB_200_2011.tgz": (
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
        "md5:97eceeb196236b17998738112f37df78",
    ),
}
IMAGE_MEMBER = re.compile(r"^CUB_200_2011/images/([^/]+)/([^/]+\.jpg)$")
TAR_ERRORS = (tarfile.TarError, OSError, EOFError)


def required_files(config: CUBData) -> Path:
    path = data_dir() / config.archive
    if not path.is_file():
        url, checksum = DOWNLOADS["cub/CUB_200_2011.tgz"]
        raise DataNotFound(f"CUB-200-2011 data not found: {path} does not exist; download it with `python -m bench "
                           f"download cub` (or fetch {url}, {checksum}, into {path} without unpacking it), or set "
                           "BENCH_DATA_DIR to a directory that has it")
    if config.archive in DOWNLOADS:
        verify_official(path, DOWNLOADS[config.archive][1], "download it again with `python -m bench download cub --force`")
    return path


def listing(path: Path) -> dict[str, list[str]]:
    """Class folder -> its image member names, both in name order, from the tar headers."""
    by_class: dict[str, list[str]] = {}
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if member.isfile() and (match := IMAGE_MEMBER.match(member.name)):
                    by_class.setdefault(match[1], []).append(member.name)
    except TAR_ERRORS as exc:
        raise BenchError(f"{path}: cannot be read as the CUB-200-2011 archive ({exc}); download it again") from None
    if not by_class:
        raise BenchError(f"{path}: no CUB_200_2011/images/<class>/*.jpg; this is not the official CUB-200-2011 archive")
    return {name: sorted(by_class[name]) for name in sorted(by_class)}


def split_of(classes: list[str]) -> dict[SplitName, list[str]]:
    """Chen et al. 2019's split of the class folders (in name order): i % 2 == 0 train, i % 4 == 1 val, i % 4 == 3 test."""
    return {"train": classes[0::2], "val": classes[1::4], "test": classes[3::4]}


def _decode(path: Path, classes: dict[str, list[str]], config: CUBData) -> ClassImages:
    started = time.perf_counter()
    size, names = config.image_size, list(classes)
    where = {member: (row, column) for row, name in enumerate(names) for column, member in enumerate(classes[name])}
    out = np.zeros((len(names), max(len(v) for v in classes.values()), 3, size, size), dtype=np.uint8)
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                if member.name not in where:
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    raise BenchError(f"{path}: member {member.name} cannot be read; download the archive again")
                try:
                    with Image.open(io.BytesIO(handle.read())) as image:
                        rgb = image.convert("RGB").resize((size, size), FILTERS[config.resize_filter])
                except OSError as exc:
                    raise BenchError(f"{path}: member {member.name} cannot be decoded ({exc}); download the archive "
                                     "again") from None
                row, column = where[member.name]
                out[row, column] = np.asarray(rgb).transpose(2, 0, 1)
    except TAR_ERRORS as exc:
        raise BenchError(f"{path}: cannot be read as the CUB-200-2011 archive ({exc}); download it again") from None
    log.info("decoded %d CUB-200-2011 images in %.1f s", len(where), time.perf_counter() - started)
    return ClassImages(torch.from_numpy(out), tuple(names), counts=tuple(len(classes[n]) for n in names))


def load_classes(config: CUBData) -> ClassImages:
    """Every class (folder name order), its images in name order (padded rows: see ``counts``), from the cache when it exists."""
    path = required_files(config)
    key = cache_key(dataset="cub", archive_sha256=file_sha256(path), size=config.image_size, filter=config.resize_filter)
    return cached("cub", key, lambda: _decode(path, listing(path), config))


def class_sizes(config: CUBData) -> dict[str, dict[str, int]]:
    """Images of each class of each split, from the archive's listing (nothing decoded)."""
    classes = listing(required_files(config))
    return {split: {name: len(classes[name]) for name in names} for split, names in split_of(list(classes)).items()}


def load_split_images(config: CUBData) -> tuple[ClassImages, dict[str, list[int]]]:
    data = load_classes(config)
    index = data.index()
    return data, {split: [index[c] for c in names] for split, names in split_of(list(data.class_names)).items()}


__all__ = ["DOWNLOADS", "SPLITS", "class_sizes", "listing", "load_split_images", "required_files", "split_of"]
