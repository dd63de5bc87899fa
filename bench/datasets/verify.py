"""Data files checked against their official checksums at first use.

Each dataset module's ``DOWNLOADS`` gives the official checksum of every file it can fetch. Before
a run reads one of those files, its checksum is compared; a match is remembered in
``$BENCH_CACHE_DIR/verified-data.json`` by (path, size, modification time), so later runs pay
only a ``stat``. A zip archive may instead match ``MEMBER_DIGESTS``: the SHA-256 of its sorted
(member, size, CRC-32) listing, which is the same for the official zip and for a faithful
re-archive of the same files (zipfile checks each member's CRC-32 as it reads it).

``BENCH_UNVERIFIED_DATA=1`` skips the check (your own copy of a dataset under an official name);
records then say so in ``environment.data_checksums``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path

from bench.datasets.base import ZIP_ERRORS, cache_dir, file_digest
from bench.errors import BenchError
from bench.records import write_atomic

log = logging.getLogger(__name__)
MEMO = "verified-data.json"  # bench.run.cache lists and clears it with the data caches
SKIP_VARIABLE = "BENCH_UNVERIFIED_DATA"


def checks_skipped() -> bool:
    return os.environ.get(SKIP_VARIABLE, "") not in ("", "0")


def describe() -> str:
    """What a record says about the data files it read."""
    return f"not checked ({SKIP_VARIABLE}=1)" if checks_skipped() else "official checksums"


def member_digest(path: Path) -> str:
    """SHA-256 of a zip's sorted (member name, size, CRC-32) listing."""
    with zipfile.ZipFile(path) as archive:
        lines = sorted(f"{i.filename}\0{i.file_size}\0{i.CRC:08x}" for i in archive.infolist() if not i.is_dir())
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _memo_path() -> Path:
    return cache_dir() / MEMO


def _read_memo() -> dict[str, dict]:
    try:
        memo = json.loads(_memo_path().read_text())
        return memo if isinstance(memo, dict) else {}
    except (OSError, ValueError):
        return {}


def verify_official(path: Path, expected: str, how_to_get: str, member_sha256: str | None = None) -> None:
    """Raise a ``BenchError`` unless ``path`` matches ``expected`` ("md5:..." or "sha256:...") or,
    for a zip, the listing digest ``member_sha256``."""
    if checks_skipped():
        return
    stat = path.stat()
    seen = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "expected": expected}
    memo = _read_memo()
    if memo.get(str(path.resolve())) == seen:
        return
    algorithm, _, digest = expected.partition(":")
    matches = file_digest(path, algorithm) == digest
    if not matches and member_sha256 is not None:
        try:
            matches = member_digest(path) == member_sha256
        except ZIP_ERRORS:
            matches = False
    if not matches:
        raise BenchError(f"{path} does not match its official checksum ({expected}): it is damaged or another "
                         f"version; {how_to_get} (or set {SKIP_VARIABLE}=1 to use it as it is, recorded as unchecked)")
    memo[str(path.resolve())] = seen
    try:
        write_atomic(_memo_path(), json.dumps(memo, indent=1, sort_keys=True))
    except OSError as exc:  # only a memo: the check runs again next time
        log.warning("could not remember that %s was checked (%s)", path, exc.strerror or exc)
