"""Fetch the official dataset archives into the data directory, verifying their checksums.

Each dataset module declares ``DOWNLOADS = {relative path: (official URL, "md5:..." or "sha256:...")}``.
A file is written under a temporary name and renamed only after its checksum matches, so an
interrupted or corrupted download (an HTML error page, a truncated file) never looks like data.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import shutil
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from bench.datasets.base import data_dir
from bench.errors import BenchError, did_you_mean

log = logging.getLogger(__name__)

DATASET_MODULES = {
    "omniglot": "bench.datasets.omniglot",
    "tiny-imagenet": "bench.datasets.tiny_imagenet",
}
NOT_DOWNLOADABLE = {
    "mini-imagenet": "mini-ImageNet has no official download; see the message of `python -m bench run mini-imagenet-5w1s`",
}


def downloads(dataset: str) -> dict[str, tuple[str, str]]:
    if dataset in NOT_DOWNLOADABLE:
        raise BenchError(NOT_DOWNLOADABLE[dataset])
    if dataset not in DATASET_MODULES:
        raise BenchError(f"unknown dataset {dataset!r}; {did_you_mean(dataset, [*DATASET_MODULES, *NOT_DOWNLOADABLE])}")
    return importlib.import_module(DATASET_MODULES[dataset]).DOWNLOADS


def checksum_matches(path: Path, expected: str) -> bool:
    algorithm, _, digest = expected.partition(":")
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest() == digest


def download(dataset: str, target_dir: Path | None = None, force: bool = False) -> list[Path]:
    """Download ``dataset``'s archives into ``target_dir`` (default: the data directory)."""
    target_dir = Path(target_dir or data_dir())
    written = []
    for relative, (url, expected) in downloads(dataset).items():
        path = target_dir / relative
        if path.is_file() and not force:
            log.info("%s exists; not downloading it again (use --force to)", path)
            written.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=None) as bar:
                    while block := response.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
            if not checksum_matches(partial, expected):
                raise BenchError(f"{url}: the download does not match its checksum {expected}; "
                                 f"the server may have sent an error page: try again later or fetch it by hand into {path}")
            shutil.move(partial, path)
        except OSError as exc:
            raise BenchError(f"{url}: download failed ({exc}); fetch it by hand into {path}") from None
        finally:
            partial.unlink(missing_ok=True)
        written.append(path)
    return written
