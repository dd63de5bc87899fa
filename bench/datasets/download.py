"""Fetch the official dataset archives into the data directory, verifying their checksums.

Each dataset module declares ``DOWNLOADS = {relative path: (official URL, "md5:..." or "sha256:...")}``;
a URL ``archive.zip#member`` means the file is that member of the zip, and the checksum is the member's.
A file is written under a temporary name and renamed only after its checksum matches, so an
interrupted or corrupted download (an HTML error page, a truncated file) never looks like data.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.request
import zipfile
from pathlib import Path

from tqdm.auto import tqdm

from bench.datasets import DATA_MODULES, dataset_module
from bench.datasets.base import data_dir, file_digest
from bench.errors import BenchError, did_you_mean

log = logging.getLogger(__name__)

NOT_DOWNLOADABLE = {
    "image-folder": "an image folder is your own data: nothing to download (docs/data.md, \"Bring your own images\")",
    "mini-imagenet": "mini-ImageNet has no official download; see the message of `python -m bench run mini-imagenet-5w1s`",
    "tiered-imagenet": "tieredImageNet has no official download; see the message of `python -m bench run tiered-imagenet-5w1s`",
}


def downloads(dataset: str) -> dict[str, tuple[str, str]]:
    if dataset in NOT_DOWNLOADABLE:
        raise BenchError(NOT_DOWNLOADABLE[dataset])
    if dataset not in DATA_MODULES:
        raise BenchError(f"unknown dataset {dataset!r}; {did_you_mean(dataset, list(DATA_MODULES))}")
    module = dataset_module(dataset)
    assert module is not None, "every downloadable dataset has a reader module (DATA_MODULES)"
    return module.DOWNLOADS


def checksum_matches(path: Path, expected: str) -> bool:
    algorithm, _, digest = expected.partition(":")
    return file_digest(path, algorithm) == digest


def download(dataset: str, target_dir: Path | None = None, force: bool = False) -> list[Path]:
    """Download ``dataset``'s archives into ``target_dir`` (default: the data directory)."""
    target_dir = Path(target_dir or data_dir())
    written = []
    fetched: dict[str, Path] = {}  # zip URL -> the downloaded archive, for files that are members of one
    for relative, (url, expected) in downloads(dataset).items():
        path = target_dir / relative
        if path.is_file() and not force:
            log.info("%s exists; not downloading it again (use --force to)", path)
            written.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        url, _, member = url.partition("#")
        try:
            if member:
                archive = fetched.get(url) or _fetch(url, target_dir / f".{os.getpid()}.zip.part")
                fetched[url] = archive
                with zipfile.ZipFile(archive) as zipped, zipped.open(member) as source, partial.open("wb") as out:
                    shutil.copyfileobj(source, out)
            else:
                _fetch(url, partial)
            if not checksum_matches(partial, expected):
                raise BenchError(f"{url}: the download does not match its checksum {expected}; "
                                 f"the server may have sent an error page: try again later or fetch it by hand into {path}")
            shutil.move(partial, path)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            for archive in fetched.values():
                archive.unlink(missing_ok=True)
            raise BenchError(f"{url}: download failed ({exc}); fetch it by hand into {path}") from None
        finally:
            partial.unlink(missing_ok=True)
        written.append(path)
    for archive in fetched.values():
        archive.unlink(missing_ok=True)
    return written


def _fetch(url: str, out_path: Path) -> Path:
    with urllib.request.urlopen(url, timeout=60) as response, out_path.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=out_path.name, disable=None) as bar:
            while block := response.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    return out_path
