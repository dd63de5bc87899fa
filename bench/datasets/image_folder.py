"""Bring your own images: ``data: {kind: image-folder, root: ..., split: ...}`` over ``root/<class>/<image>``.

The listing (which files form which class of which split) is read without decoding anything, so
``validate`` and ``run --dry-run`` check it before any work. The decoded images are cached as for
the other image datasets, keyed by the SHA-256 of every image file's bytes and the preprocessing,
so an edited, added or removed image builds a new cache.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.config import ImageFolderData, SplitName
from bench.datasets.base import FILTERS, SPLITS, ClassImages, cache_key, cached, data_dir, file_sha256
from bench.errors import BenchError, DataNotFound

log = logging.getLogger(__name__)
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}  # every other mode PIL reads is colour (P, RGB, RGBA, CMYK, YCbCr, ...)


def root(config: ImageFolderData) -> Path:
    path = Path(config.root).expanduser()
    return path if path.is_absolute() else data_dir() / path


def _folders(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(directory: Path, limit: int | None) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.is_file() and not p.name.startswith("."))
    return files[:limit]


def listing(config: ImageFolderData) -> dict[SplitName, dict[str, list[Path]]]:
    """Per split, each class's image files in file-name order (the first ``images_per_class``)."""
    base = root(config)
    if not base.is_dir():
        raise DataNotFound(f"image folder {base} not found; set data.root to a folder of class folders (relative to "
                         "$BENCH_DATA_DIR, or absolute)")
    if config.split == "subfolders":
        missing = [s for s in SPLITS if not (base / s).is_dir()]
        if missing:
            raise BenchError(f"image folder {base}: split: subfolders needs {base / missing[0]}/ (with one folder per "
                             f"class); it has {', '.join(_folders(base)) or 'no folders'}")
        classes: dict[SplitName, tuple[Path, list[str]]] = {s: (base / s, _folders(base / s)) for s in SPLITS}
    else:
        found = _folders(base)
        for split, listed in config.split.items():
            unknown = [n for n in listed if not (base / n).is_dir()]
            if unknown:
                shown = ", ".join(found[:8]) + ("..." if len(found) > 8 else "")
                raise BenchError(f"image folder {base}: split {split!r} lists class {unknown[0]!r}, which is not a "
                                 f"folder there (folders: {shown or 'none'})")
        classes = {s: (base, list(config.split.get(s, ()))) for s in SPLITS}
    out: dict[SplitName, dict[str, list[Path]]] = {}
    seen: dict[str, str] = {}
    for split, (parent, names) in classes.items():
        out[split] = {}
        for name in names:
            if name in seen:
                raise BenchError(f"image folder {base}: class {name!r} is in both the {seen[name]!r} and the {split!r} "
                                 "split; a class belongs to one split")
            seen[name] = split
            files = _images(parent / name, config.images_per_class)
            if not files:
                raise BenchError(f"image folder {base}: class folder {parent / name} has no images; add some or "
                                 "leave the class out of the split")
            out[split][name] = files
    return out


def required_files(config: ImageFolderData) -> list[Path]:
    """Every image of the listing; each one's header is read (a file that is no image, and mixed
    channel counts, are errors here, before any work)."""
    files = [p for classes in listing(config).values() for files in classes.values() for p in files]
    image_channels(config, files)
    return files


def class_sizes(config: ImageFolderData) -> dict[str, dict[str, int]]:
    """Images of each class of each split, from the listing (nothing decoded)."""
    return {split: {name: len(files) for name, files in classes.items()} for split, classes in listing(config).items()}


def _not_an_image(path: Path, exc: Exception) -> BenchError:
    return BenchError(f"{path}: cannot be read as an image ({type(exc).__name__}: {exc}); replace it or remove it "
                      "from the class folder")


def _open(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
        return image
    except Exception as exc:  # PIL raises many kinds for a damaged file: name it, whatever it was
        raise _not_an_image(path, exc) from None


def image_channels(config: ImageFolderData, files: list[Path]) -> int:
    """The channels to convert to: the configured ones, else the images' own, which must agree.
    Reads each file's header only."""
    first: dict[int, Path] = {}
    for path in files:
        try:
            with Image.open(path) as image:
                first.setdefault(1 if image.mode in GREY_MODES else 3, path)
        except Exception as exc:  # as in _open
            raise _not_an_image(path, exc) from None
        if config.channels is None and len(first) > 1:
            raise BenchError(f"image folder {root(config)}: mixed channel counts ({first[1]} is grey, {first[3]} is "
                             "colour); set data.channels: 3 (or 1) to convert every image")
    return config.channels or next(iter(first), 3)


def _decode(config: ImageFolderData, classes: dict[str, list[Path]], channels: int) -> ClassImages:
    size, width = (config.image_size, config.image_size), max(len(files) for files in classes.values())
    images = np.zeros((len(classes), width, size[0], size[1], channels), dtype=np.uint8)
    for row, files in enumerate(classes.values()):
        for column, path in enumerate(files):
            image = _open(path)
            converted = image.convert("L" if channels == 1 else "RGB").resize(size, FILTERS[config.resize_filter])
            images[row, column] = np.asarray(converted).reshape(size[0], size[1], channels)
    tensor = torch.from_numpy(images).permute(0, 1, 4, 2, 3).contiguous()  # (classes, images, C, H, W)
    return ClassImages(tensor, tuple(classes), counts=tuple(len(files) for files in classes.values()))


def load_split_images(config: ImageFolderData) -> tuple[ClassImages, dict[str, list[int]]]:
    """Every class of every split as one ClassImages (padded to the largest class; ``counts`` says
    how many images each has), and each split's class indices into it."""
    found = listing(config)
    classes = {name: files for split in SPLITS for name, files in found[split].items()}
    files = [p for paths in classes.values() for p in paths]
    channels = image_channels(config, files)
    if config.mean is not None and len(config.mean) != channels:
        raise BenchError(f"image folder {root(config)}: data.mean and data.std have {len(config.mean)} values, the "
                         f"images {channels} channel(s); give one value per channel")
    base = root(config)
    log.info("image folder %s: hashing %d images", base, len(files))
    key = cache_key(dataset="image-folder", files=[(str(p.relative_to(base)), file_sha256(p)) for p in files],
                    classes=[(name, len(paths)) for name, paths in classes.items()], size=config.image_size,
                    filter=config.resize_filter, channels=channels)
    data = cached("image-folder", key, lambda: _decode(config, classes, channels))
    position = {name: i for i, name in enumerate(data.class_names)}
    return data, {split: [position[name] for name in found[split]] for split in SPLITS}
