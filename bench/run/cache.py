"""``python -m bench cache show|clear``: what bench keeps under ``$BENCH_CACHE_DIR`` between runs.

Two kinds of file, both rebuilt when missing: the task-chunk choices (``task-chunk.json``, see
``bench.run.execution``) and prepared data (decoded images, tokenised texts, sentence embeddings:
``<name>-<20 hex digits>.pt`` with its SHA-256 beside it, and the mini-ImageNet digest memo). Only files of those names are
ever removed, so a cache directory shared with other programs loses nothing of theirs.
"""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from bench.datasets.base import cache_dir
from bench.run.execution import clear_chunk_cache, read_chunk_cache

VERIFIED_MEMO = "verified-data.json"  # bench.datasets.verify: files whose checksums matched
DATA_FILE = re.compile(r"^[a-z0-9-]+-[0-9a-f]{20}\.(pt|txt|pt\.sha256)$")  # a cache, its SHA-256, a digest memo


def data_files(directory: Path | None = None) -> list[Path]:
    directory = directory or cache_dir()
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*") if p.is_file() and (DATA_FILE.match(p.name) or p.name == VERIFIED_MEMO))


def describe() -> str:
    directory = cache_dir()
    lines = [f"cache directory: {directory} (set BENCH_CACHE_DIR to move it)", "", "task-chunk choices:"]
    entries = read_chunk_cache()
    if not entries:
        lines.append("  (none: the next run of each configuration measures)")
    for key, entry in sorted(entries.items(), key=lambda item: (str(item[1].get("suite")), str(item[1].get("algorithm")))):
        if not isinstance(entry, dict) or not isinstance(entry.get("seconds"), dict):
            lines.append(f"  {key}: unreadable entry (measured again when its configuration runs)")
            continue
        medians = []
        for chunk, values in entry["seconds"].items():
            values = values if isinstance(values, list) else [values]
            try:
                medians.append(f"{chunk}: {statistics.median(values) * 1000:.1f} ms")
            except (TypeError, statistics.StatisticsError):
                medians.append(f"{chunk}: ?")
        what = (f"{entry['suite']} {entry['algorithm']}" if "suite" in entry and "algorithm" in entry
                else "(an older bench's entry, measured again when used)")
        lines.append(f"  {key}  {what}: chunk {entry.get('task_chunk')} (medians {', '.join(medians)}; "
                     f"measured {entry.get('measured_at', '?')})")
    lines += ["", "prepared data:"]
    files = data_files(directory)
    lines += [f"  {p.name}  {p.stat().st_size / 2**20:,.1f} MB" for p in files] or ["  (none)"]
    return "\n".join(lines)


def clear(what: str) -> list[str]:
    """Remove the task-chunk choices (``task-chunk``), the prepared data (``data``) or both (``all``)."""
    said = []
    if what in ("task-chunk", "all"):
        said.append("removed the task-chunk choices" if clear_chunk_cache() else "no task-chunk choices to remove")
    if what in ("data", "all"):
        files = data_files()
        size = sum(p.stat().st_size for p in files)
        for path in files:
            path.unlink(missing_ok=True)
        said.append(f"removed {len(files)} prepared data file(s), {size / 2**20:,.1f} MB (rebuilt when next needed)")
    return said
