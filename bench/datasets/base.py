"""Image datasets as one uint8 tensor per dataset, decoded once and cached on disk.

``ClassImages.images`` is (n_classes, n_per_class, C, H, W) uint8: every class has the same number
of examples, so an episode is a single gather by (class, example) indices, on the target device.
The cache file is keyed by a hash of everything that decides its content (the archives' bytes,
the preprocessing, the cache format), so a change of any of them builds a new cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.config import SplitName
from bench.errors import DataNotFound
from bench.records import write_atomic

log = logging.getLogger(__name__)
CACHE_FORMAT = 1
SPLITS: tuple[SplitName, ...] = ("train", "val", "test")  # every classification dataset's splits, in this order
# What reading a damaged zip archive raises: a bad header or CRC (BadZipFile), a flipped
# compression-method byte (NotImplementedError), corrupt deflate data (zlib.error), a truncated
# member (EOFError), or an unreadable file (OSError).
ZIP_ERRORS = (zipfile.BadZipFile, NotImplementedError, zlib.error, EOFError, OSError)
# The suites' resize_filter names, as PIL's filters.
FILTERS = {"lanczos": Image.Resampling.LANCZOS, "bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "box": Image.Resampling.BOX, "nearest": Image.Resampling.NEAREST}


NUMPY_2 = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


class ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists, bytes and numbers only: a downloaded pickle must not run code."""

    # _codecs.encode is how protocol 2 spells bytes on Python 3.
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        canonical = "numpy._core" + module.removeprefix("numpy.core") if module.startswith("numpy.core") else module
        if (canonical, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        # Pickles written by numpy 1 name numpy.core, which numpy 2 renamed (importing it warns).
        return super().find_class(canonical if NUMPY_2 else module, name)


@dataclass(frozen=True)
class ClassImages:
    images: torch.Tensor  # (n_classes, n_per_class, C, H, W) uint8
    class_names: tuple[str, ...]
    key: str = ""  # the cache key: a hash of everything the pixels depend on
    # Images of each class when classes differ in size (the rest of a row is padding); None: all n_per_class.
    counts: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 5:
            raise ValueError("images must be uint8 (n_classes, n_per_class, C, H, W)")
        if len(self.class_names) != self.images.shape[0]:
            raise ValueError("one class name per class")
        if self.counts is not None and (len(self.counts) != len(self.class_names)
                                        or not all(1 <= n <= self.images.shape[1] for n in self.counts)):
            raise ValueError("one count per class, each from 1 to n_per_class")

    def sizes(self) -> tuple[int, ...]:
        """Images of each class."""
        return self.counts if self.counts is not None else (self.images.shape[1],) * len(self.class_names)

    def index(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.class_names)}


def data_dir() -> Path:
    """Where datasets are read from: ``$BENCH_DATA_DIR``, else ``~/.cache/bench/data``."""
    return Path(os.environ.get("BENCH_DATA_DIR") or Path.home() / ".cache" / "bench" / "data")


def cache_dir() -> Path:
    return Path(os.environ.get("BENCH_CACHE_DIR") or Path.home() / ".cache" / "bench" / "cache")


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes (``algorithm``: a hashlib name, e.g. "md5")."""
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def require_files(paths: list[Path], dataset: str, how_to_get: str) -> None:
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataNotFound(f"{dataset} data not found: {', '.join(missing)}; {how_to_get}")


def cache_key(**inputs: Any) -> str:
    text = json.dumps({"cache_format": CACHE_FORMAT, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cached_file(name: str, key: str, build: Callable[[], Any], encode: Callable[[Any], Any] = lambda value: value,
                decode: Callable[[Any], Any] = lambda stored: stored) -> Any:
    """``decode`` of what ``<cache_dir>/<name>-<key>.pt`` holds, or build it with ``build()`` and store
    ``encode`` of it atomically. The file is memory-mapped: a run reads only the pages it touches
    (Tiny-ImageNet's cache is 737 MB)."""
    path = cache_dir() / f"{name}-{key}.pt"
    digest_path = path.with_name(f"{path.name}.sha256")  # the SHA-256 of the file's bytes, written with it
    if path.is_file():
        try:
            expected = digest_path.read_text().strip() if digest_path.is_file() else None
            if expected != file_sha256(path):
                # The key covers the inputs; this covers the bytes actually read: an edited or
                # damaged cache would otherwise pass for the data it was built from.
                raise ValueError("its content does not match the SHA-256 written when it was built"
                                 if expected else "it has no content hash")
            return decode(torch.load(path, weights_only=True, mmap=True))
        except Exception as exc:  # a damaged cache is rebuilt, never trusted
            log.warning("cache %s is unreadable or damaged (%s); rebuilding it", path, exc)
    log.info("building %s once into %s", name, path)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        torch.save(encode(value), tmp)
        write_atomic(digest_path, file_sha256(tmp) + "\n")
        os.replace(tmp, path)
    except OSError as exc:  # a full cache disk: the run goes on with the data in memory
        Path(tmp).unlink(missing_ok=True)
        log.warning("cache %s not written (%s); the data will be read again next time", path, exc.strerror or exc)
    return value


def cached_tensor(name: str, key: str, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor cached as ``<cache_dir>/<name>-<key>.pt``, built by ``build()`` when missing or damaged."""
    return cached_file(name, key, build)


def cached(name: str, key: str, build: Callable[[], ClassImages]) -> ClassImages:
    """The images cached as ``<cache_dir>/<name>-<key>.pt``, decoded by ``build()`` when missing or damaged."""
    return cached_file(
        name, key, lambda: dataclasses.replace(build(), key=key),
        encode=lambda data: {"images": data.images, "class_names": list(data.class_names),
                             **({"counts": list(data.counts)} if data.counts is not None else {})},
        decode=lambda stored: ClassImages(stored["images"], tuple(stored["class_names"]), key,
                                          tuple(stored["counts"]) if "counts" in stored else None),
    )


__all__ = [
    "FILTERS", "ArrayUnpickler", "ClassImages", "cache_dir", "cache_key", "cached", "cached_file", "cached_tensor",
    "data_dir", "file_digest", "file_sha256", "require_files", "write_atomic",
]
