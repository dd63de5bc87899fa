"""mini-ImageNet (Vinyals et al. 2016), Ravi & Larochelle's 64 / 16 / 20 class split, 84x84 RGB.

There is no official archive: the images are cut from ImageNet and circulate pre-resized in two
forms, both read here as they are distributed (``format`` in the suite):

- ``folder``: the images named as in the split CSVs (``n0153282900000005.jpg``) in one directory,
  as MAML's and ProtoNets' preprocessing scripts expect, with Ravi & Larochelle's
  ``{train,val,test}.csv`` (``filename,label``) naming each split's images;
- ``pickle``: learn2learn's ``mini-imagenet-cache-{train,validation,test}.pkl``, each a dict with
  ``image_data`` (uint8, (n, 84, 84, 3)) and ``class_dict`` ({wnid: [indices into image_data]}).

Class names in the cache are ``<split>/<wnid>`` so the split is known on a cached load without
reading the sources again. The cache key hashes the sources' bytes (so the key, and the episode
hashes derived from it, mean the same pixels on every machine); since the sources are 60,000
files or 1.3 GB, that digest is memoised by the files' sizes and modification times.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import pickle
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.config import MiniImageNetData
from bench.datasets.base import FILTERS, SPLITS, ArrayUnpickler, ClassImages, cache_dir, cache_key, cached, data_dir, file_sha256
from bench.errors import BenchError, DataNotFound

log = logging.getLogger(__name__)

RAVI_CLASSES = {"train": 64, "val": 16, "test": 20}
CSV_NAMES = {split: f"{split}.csv" for split in SPLITS}
PICKLE_NAMES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
                "test": "mini-imagenet-cache-test.pkl"}
# Where the common distributions come from, named in the "not found" message. None is official,
# none has a published checksum, so `python -m bench download` does not fetch them.
PICKLE_URLS = {
    "train": "https://drive.google.com/uc?export=download&id=1I3itTXpXxGV68olxM5roceUMG8itH9Xj",
    "val": "https://drive.google.com/uc?export=download&id=1KY5e491bkLFqJDp0-UWou3463Mo8AOco",
    "test": "https://drive.google.com/uc?export=download&id=1wpmY-hmiJUUlRBkO9ZDCXAcIpHEFdOhD",
}
CSV_SOURCE = "https://github.com/twitter/meta-learning-lstm/tree/master/data/miniImagenet"


def _paths(config: MiniImageNetData) -> dict[str, dict[str, Path]]:
    root = data_dir()
    return {"csv": {s: root / config.csv_dir / CSV_NAMES[s] for s in SPLITS},
            "pickle": {s: root / config.pickle_dir / PICKLE_NAMES[s] for s in SPLITS}}


def _how_to_get(config: MiniImageNetData) -> str:
    paths, images = _paths(config), data_dir() / config.image_dir
    pickles = (f"download learn2learn's pickles into {data_dir() / config.pickle_dir}/ ("
               + ", ".join(f"{paths['pickle'][s].name} from {PICKLE_URLS[s]}" for s in SPLITS) + ")")
    folder = (f"put the images named as in Ravi & Larochelle's split CSVs (n0153282900000005.jpg, ...; the images.zip "
              f"that MAML's proc_images.py reads, unpacked) in {images}/ and their train.csv, val.csv and test.csv "
              f"({CSV_SOURCE}) in {data_dir() / config.csv_dir}/")
    if config.format == "pickle":
        return f"{pickles}; or {folder} and run with --set 'suite.data={{kind: mini-imagenet, format: folder}}'"
    return f"{folder}; or {pickles} and run with --set 'suite.data={{kind: mini-imagenet, format: pickle}}'"


def required_files(config: MiniImageNetData) -> list[Path]:
    """The source files of the configured format; raises a one-line ``BenchError`` naming what to get."""
    paths = _paths(config)
    if config.format == "pickle":
        needed = list(paths["pickle"].values())
    else:
        needed = [*paths["csv"].values(), data_dir() / config.image_dir]
    missing = [str(p) for p in needed if not p.exists()]
    if not missing and config.format == "folder":
        # An empty or wrong image directory shows in the first file each CSV names.
        for path in paths["csv"].values():
            first = next(iter(_read_csv(path).values()), [None])[0]
            if first is not None and not (data_dir() / config.image_dir / first).is_file():
                missing.append(str(data_dir() / config.image_dir / first))
    if missing:
        raise DataNotFound(f"mini-ImageNet data not found ({config.format} format): {', '.join(missing)}; "
                         f"{_how_to_get(config)}")
    return needed


def _read_csv(path: Path) -> dict[str, list[str]]:
    """wnid -> file names, in the CSV's row order."""
    rows: dict[str, list[str]] = defaultdict(list)
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header != ["filename", "label"]:
                raise BenchError(f"{path}: expected the header 'filename,label', got {header!r}")
            for line, row in enumerate(reader, start=2):
                if len(row) != 2:
                    raise BenchError(f"{path}: line {line} is not 'filename,label'")
                rows[row[1]].append(row[0])
    except (OSError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path}: cannot be read ({exc})") from None
    return dict(rows)


def _check_split(classes: dict[str, list[str]], source: str) -> None:
    seen: dict[str, str] = {}
    for split in SPLITS:
        if len(classes[split]) != RAVI_CLASSES[split]:
            raise BenchError(f"{source}: the {split} split has {len(classes[split])} classes, Ravi & Larochelle's has "
                             f"{RAVI_CLASSES[split]}; these are not the mini-ImageNet split files")
        for wnid in classes[split]:
            if wnid in seen:
                raise BenchError(f"{source}: class {wnid} is in both the {seen[wnid]} and the {split} split")
            seen[wnid] = split


def _first(items: list[Any], n: int, what: str) -> list[Any]:
    if len(items) < n:
        raise BenchError(f"{what} has {len(items)} images, fewer than images_per_class = {n}; lower images_per_class "
                         "or get the complete data")
    return items[:n]


def _to_chw(rgb: Image.Image, config: MiniImageNetData) -> np.ndarray:
    size = (config.image_size, config.image_size)
    if rgb.size != size:
        rgb = rgb.resize(size, FILTERS[config.resize_filter])
    return np.asarray(rgb).transpose(2, 0, 1)


def _read_pickle(path: Path) -> tuple[np.ndarray, dict[str, list[int]]]:
    try:
        with path.open("rb") as handle:
            raw = ArrayUnpickler(handle, encoding="latin1").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise BenchError(f"{path}: not a readable mini-ImageNet pickle ({exc}); download it again") from None
    images = raw.get("image_data") if isinstance(raw, dict) else None
    class_dict = raw.get("class_dict") if isinstance(raw, dict) else None
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[3] == 3
            and isinstance(class_dict, dict)):
        raise BenchError(f"{path}: expected a dict with 'image_data' (uint8, (n, H, W, 3)) and 'class_dict'; "
                         "this is not learn2learn's mini-ImageNet pickle")
    return images, {str(k): [int(i) for i in v] for k, v in class_dict.items()}


def _decode_folder(config: MiniImageNetData) -> ClassImages:
    paths, image_dir = _paths(config), data_dir() / config.image_dir
    names, stacks = [], []
    for split in SPLITS:
        rows = _read_csv(paths["csv"][split])
        for wnid in sorted(rows):
            files = _first(rows[wnid], config.images_per_class, f"{paths['csv'][split]}: class {wnid}")
            stack = np.empty((len(files), 3, config.image_size, config.image_size), dtype=np.uint8)
            for i, name in enumerate(files):
                try:
                    with Image.open(image_dir / name) as image:
                        stack[i] = _to_chw(image.convert("RGB"), config)
                except FileNotFoundError:
                    raise BenchError(f"{image_dir / name} not found (listed in {paths['csv'][split]}); "
                                     f"{_how_to_get(config)}") from None
                except OSError as exc:
                    raise BenchError(f"{image_dir / name} cannot be decoded ({exc}); get the images again") from None
            names.append(f"{split}/{wnid}")
            stacks.append(stack)
    return ClassImages(torch.from_numpy(np.stack(stacks)), tuple(names))


def _decode_pickle(config: MiniImageNetData) -> ClassImages:
    paths = _paths(config)
    names, stacks = [], []
    for split in SPLITS:
        images, class_dict = _read_pickle(paths["pickle"][split])
        for wnid in sorted(class_dict):
            indices = _first(class_dict[wnid], config.images_per_class, f"{paths['pickle'][split]}: class {wnid}")
            if max(indices) >= len(images) or min(indices) < 0:
                raise BenchError(f"{paths['pickle'][split]}: class {wnid} indexes past image_data; download it again")
            if images.shape[1:3] == (config.image_size, config.image_size):
                stack = images[indices].transpose(0, 3, 1, 2)
            else:
                stack = np.stack([_to_chw(Image.fromarray(images[i]), config) for i in indices])
            names.append(f"{split}/{wnid}")
            stacks.append(np.ascontiguousarray(stack))
        del images  # the train pickle alone is 0.8 GB
    return ClassImages(torch.from_numpy(np.stack(stacks)), tuple(names))


def _check_against_csvs(data: ClassImages, config: MiniImageNetData) -> None:
    """A pickle carries no file names; when the split CSVs are at hand, its classes must be theirs."""
    csvs = _paths(config)["csv"]
    if not all(p.is_file() for p in csvs.values()):
        return
    for split, path in csvs.items():
        expected = sorted(_read_csv(path))
        found = [n.split("/", 1)[1] for n in data.class_names if n.startswith(f"{split}/")]
        if found != expected:
            raise BenchError(f"{_paths(config)['pickle'][split]}: its classes differ from those of {path}; "
                             "these pickles do not hold Ravi & Larochelle's split")


def _source_files(config: MiniImageNetData) -> list[Path]:
    paths = _paths(config)
    if config.format == "pickle":
        return list(paths["pickle"].values())
    image_dir = data_dir() / config.image_dir
    files = list(paths["csv"].values())
    for split in SPLITS:
        rows = _read_csv(paths["csv"][split])
        files += [image_dir / name for wnid in sorted(rows) for name in rows[wnid][:config.images_per_class]]
    return files


def _content_digest(files: list[Path], config: MiniImageNetData) -> str:
    """SHA-256 over the files' names and bytes, memoised under their sizes and modification times."""
    try:
        stats = [(str(p), s.st_size, s.st_mtime_ns) for p in files for s in [p.stat()]]
    except FileNotFoundError as exc:
        raise DataNotFound(f"mini-ImageNet file {exc.filename} not found; {_how_to_get(config)}") from None
    memo = cache_dir() / f"mini-imagenet-digest-{hashlib.sha256(repr(stats).encode()).hexdigest()[:20]}.txt"
    if memo.is_file():
        return memo.read_text().strip()
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(digest.hexdigest())
    os.replace(tmp, memo)
    return digest.hexdigest()


def load_classes(config: MiniImageNetData) -> ClassImages:
    """The 100 classes as ``<split>/<wnid>``, ``images_per_class`` each, from the cache when it exists."""
    required_files(config)
    key = cache_key(dataset="mini-imagenet", format=config.format, sources=_content_digest(_source_files(config), config),
                    per_class=config.images_per_class, size=config.image_size, filter=config.resize_filter)

    def build() -> ClassImages:
        started = time.perf_counter()
        data = _decode_folder(config) if config.format == "folder" else _decode_pickle(config)
        _check_split({s: [n.split("/", 1)[1] for n in data.class_names if n.startswith(f"{s}/")] for s in SPLITS},
                     f"mini-ImageNet ({config.format})")
        if config.format == "pickle":
            _check_against_csvs(data, config)
        log.info("read %d mini-ImageNet images in %.1f s", data.images.shape[0] * data.images.shape[1],
                 time.perf_counter() - started)
        return data

    return cached("mini-imagenet", key, build)


# class_sizes names the classes by position: their WordNet ids are only known once the pickles or
# CSVs are read, so an episode file's class names are checked when the episodes are built.
CLASS_NAMES_BEFORE_LOADING = False


def class_sizes(config: MiniImageNetData) -> dict[str, dict[str, int]]:
    """Images of each class of each split: Ravi and Larochelle's split, as the suite file fixes it."""
    return {s: {f"{s} class {i + 1}": config.images_per_class for i in range(RAVI_CLASSES[s])} for s in SPLITS}


def load_split_images(config: MiniImageNetData) -> tuple[ClassImages, dict[str, list[int]]]:
    """All classes as one ClassImages, and each split's class indices into it."""
    data = load_classes(config)
    splits: dict[str, list[int]] = {s: [i for i, n in enumerate(data.class_names) if n.startswith(f"{s}/")] for s in SPLITS}
    return data, splits
