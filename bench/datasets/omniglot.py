"""Omniglot (Lake, Salakhutdinov and Tenenbaum, Science 2015), read from the official archives.

The archives hold ``images_<set>/<Alphabet>/characterNN/XXXX_YY.png``: 105x105 1-bit PNGs,
20 drawings per character. Each is resized to ``image_size`` with the recorded filter and scaled
so that strokes are 1 (255 in the uint8 cache) when ``strokes: 1``.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.config import OmniglotData
from bench.datasets.base import FILTERS, SPLITS, ZIP_ERRORS, ClassImages, cache_key, cached, data_dir, file_sha256, require_files
from bench.datasets.verify import verify_official
from bench.errors import BenchError

# Official sources; the MD5s are those torchvision's Omniglot dataset checks.
DOWNLOADS = {
    "omniglot/images_background.zip": (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_background.zip",
        "md5:68d2efa1b9178cc56df9314c21c6e718",
    ),
    "omniglot/images_evaluation.zip": (
        "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/images_evaluation.zip",
        "md5:6b91aef0f799c5bb55b94e3f2daec811",
    ),
}
# SHA-256 of each official archive's (member, size, CRC-32) listing (bench.datasets.verify): the
# same for the official zip and for a faithful re-archive of its PNGs, whose zip bytes differ.
MEMBER_DIGESTS = {
    "omniglot/images_background.zip": "9f140fca591cdadb8ff9d7436e4728e138765a0cf5069b8b1b3d487371d69635",
    "omniglot/images_evaluation.zip": "211350ad548c68ce7fc8759ef5e05f9a7521228e08bf633e74fc1232e0cb645f",
}
DRAWINGS_PER_CHARACTER = 20
MEMBER = re.compile(r"^images_(?:background|evaluation)/([^/]+)/(character\d+)/[^/]+\.png$")


def _decode(paths: list[Path], config: OmniglotData) -> ClassImages:
    drawings: dict[str, list[tuple[str, np.ndarray]]] = defaultdict(list)
    size = (config.image_size, config.image_size)
    for path in paths:
        try:
            archive = zipfile.ZipFile(path)
            members = archive.namelist()
        except ZIP_ERRORS as exc:
            raise BenchError(f"{path}: not a readable zip archive ({exc}); download it again") from None
        for member in members:
            match = MEMBER.match(member)
            if not match:
                continue
            try:
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    pixels = np.asarray(image.convert("L").resize(size, FILTERS[config.resize_filter]))
            except ZIP_ERRORS as exc:
                raise BenchError(f"{path}: member {member} cannot be decoded ({exc}); download the archive again") from None
            drawings[f"{match[1]}/{match[2]}"].append((member, pixels))
    if not drawings:
        raise BenchError(f"{', '.join(map(str, paths))}: no Omniglot images in the official layout found")
    names = sorted(drawings)
    wrong = [n for n in names if len(drawings[n]) != DRAWINGS_PER_CHARACTER]
    if wrong:
        raise BenchError(f"Omniglot character {wrong[0]} has {len(drawings[wrong[0]])} drawings, expected "
                         f"{DRAWINGS_PER_CHARACTER}; the archive is incomplete: download it again")
    stacked = np.stack([np.stack([p for _, p in sorted(drawings[n])]) for n in names])
    if config.strokes == 1:
        stacked = 255 - stacked  # the PNGs draw black strokes on white
    return ClassImages(torch.from_numpy(np.ascontiguousarray(stacked)).unsqueeze(2), tuple(names))


def required_files(config: OmniglotData) -> list[Path]:
    paths = [data_dir() / a for a in config.archives]
    require_files(paths, "Omniglot", "download the official archives with `python -m bench download omniglot` "
                  "or set BENCH_DATA_DIR to a directory that has them")
    for relative, path in zip(config.archives, paths, strict=True):
        if relative in DOWNLOADS:
            verify_official(path, DOWNLOADS[relative][1], "download it again with `python -m bench download omniglot "
                            "--force`", MEMBER_DIGESTS[relative])
    return paths


def load_characters(config: OmniglotData) -> ClassImages:
    """All characters of the archives (unrotated), from the cache when it exists."""
    paths = required_files(config)
    key = cache_key(dataset="omniglot", archives=[file_sha256(p) for p in paths], size=config.image_size,
                    filter=config.resize_filter, strokes=config.strokes)
    return cached("omniglot", key, lambda: _decode(paths, config))


def _expand(pattern: str, characters: list[str]) -> list[str]:
    alphabet, _, span = pattern.partition("/")
    mine = [c for c in characters if c.split("/")[0] == alphabet]
    if not span:
        return mine
    first, _, last = span.partition("-")
    lo, hi = int(first.removeprefix("character")), int((last or first).removeprefix("character"))
    return [c for c in mine if lo <= int(c.split("/")[1].removeprefix("character")) <= hi]


def split_classes(config: OmniglotData, characters: list[str]) -> dict[str, list[str]]:
    """Class names ``Alphabet/characterNN/rotDDD`` of each split, in a fixed order."""
    out: dict[str, list[str]] = {}
    for split, patterns in config.split.items():
        chosen: list[str] = []
        for pattern in patterns:
            found = _expand(pattern, characters)
            if not found:
                raise BenchError(f"Omniglot split {split!r}: {pattern!r} matches no character in the archives")
            chosen += found
        out[split] = [f"{c}/rot{r:03d}" for c in chosen for r in config.rotations]
    seen: dict[str, str] = {}
    for split_name, names in out.items():
        for name in names:
            if name in seen and seen[name] != split_name:
                raise BenchError(f"Omniglot class {name} is in both {seen[name]!r} and {split_name!r} splits")
            seen[name] = split_name
    return out


def class_sizes(config: OmniglotData) -> dict[str, dict[str, int]]:
    """Drawings of each class of each split, from the archives' listings (no image decoded)."""
    drawings: Counter[str] = Counter()
    for path in required_files(config):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except ZIP_ERRORS as exc:
            raise BenchError(f"{path}: not a readable zip archive ({exc}); download it again") from None
        for member in names:
            if match := MEMBER.match(member):
                drawings[f"{match[1]}/{match[2]}"] += 1
    splits = split_classes(config, sorted(drawings))
    return {s: {name: drawings[name.rsplit("/", 1)[0]] for name in splits.get(s, [])} for s in SPLITS}


def load_split_images(config: OmniglotData) -> tuple[ClassImages, dict[str, list[int]]]:
    """Rotated classes as one ClassImages, and each split's class indices into it."""
    characters = load_characters(config)
    splits = split_classes(config, list(characters.class_names))
    char_index = characters.index()
    order = [name for split in SPLITS for name in splits.get(split, [])]
    images = torch.empty((len(order), *characters.images.shape[1:]), dtype=torch.uint8)
    for row, name in enumerate(order):
        character, rotation = name.rsplit("/", 1)
        images[row] = torch.rot90(characters.images[char_index[character]], int(rotation[3:]) // 90, dims=(-2, -1))
    position = {name: i for i, name in enumerate(order)}
    data = ClassImages(images, tuple(order), cache_key(characters=characters.key, rotations=config.rotations, split=order))
    return data, {s: [position[n] for n in names] for s, names in splits.items()}
