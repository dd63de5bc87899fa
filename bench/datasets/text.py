"""Labelled text datasets for few-shot classification, read from their distributed files as they are.

Every reader yields ``(text, label, where)`` with ``where`` = ``file:line`` (or ``file:split[i]``)
so that a bad example is reported where the user can find it. The examples of all ``files`` are
pooled; the suite's class split decides which classes train, validate and test.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.config import TextData
from bench.datasets.base import SPLITS, data_dir, file_sha256
from bench.datasets.verify import verify_official
from bench.errors import BenchError, DataNotFound

# Official sources. Bao et al.'s processed HuffPost and Reuters files come in one zip (the member is
# given after '#'); the checksums are of the files themselves, as distributed (sha256 of copies
# that keep the official bytes, taken when each source was added).
BAO_ZIP = "https://people.csail.mit.edu/yujia/files/distributional-signatures/data.zip"
POLYAI = "https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/master/banking_data"
DOWNLOADS = {
    "text/huffpost/huffpost.json": (
        f"{BAO_ZIP}#data/huffpost.json", "sha256:2485569669dd7ec5bf1e2f7468568a1d019faeb9941205bc9fb7edae93c488d6"),
    "text/reuters/reuters.json": (
        f"{BAO_ZIP}#data/reuters.json", "sha256:182fafbc470630eebd2a20a49563151fa78c3b929adf4b5c657306c23cfff555"),
    "text/banking77/train.csv": (
        f"{POLYAI}/train.csv", "sha256:b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b"),
    "text/banking77/test.csv": (
        f"{POLYAI}/test.csv", "sha256:d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d"),
    "text/banking77/categories.json": (
        f"{POLYAI}/categories.json", "sha256:53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63"),
    "text/clinc150/data_full.json": (
        "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json",
        "sha256:36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0"),
}
# HWU64 in the few-shot JSON-lines form has no official distribution: the original is
# Liu et al.'s NLU-Evaluation-Data, https://github.com/xliuhw/NLU-Evaluation-Data (CC BY 4.0).
HWU64_SOURCE = ("HWU64 in JSON lines {\"raw\", \"label\"} has no official download; build it from Liu et al.'s "
                "https://github.com/xliuhw/NLU-Evaluation-Data or use any copy in that form")


@dataclass(frozen=True)
class TextExamples:
    """All examples of a dataset: ``texts[i]`` has class ``labels[i]``; ``key`` hashes the files and format."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]
    key: str

    def class_sizes(self) -> Counter[str]:
        return Counter(self.labels)


def _how_to_get(relative: str) -> str | None:
    if relative in DOWNLOADS:
        url, checksum = DOWNLOADS[relative]
        return f"fetch {url} ({checksum})"
    if relative.startswith("text/hwu64/"):
        return HWU64_SOURCE
    return None


def required_files(config: TextData) -> list[Path]:
    """The dataset's files, those with an official checksum checked; a ``BenchError`` saying where
    to get each one that is missing or damaged."""
    paths = []
    for relative in config.files:
        path = Path(relative) if Path(relative).is_absolute() else data_dir() / relative
        how = _how_to_get(relative)
        if not path.is_file():
            if how is None:  # the user's own file
                raise DataNotFound(f"text data not found: {path} (data.files lists {relative!r}; a relative path is "
                                   f"read from BENCH_DATA_DIR, here {data_dir()}); put the file there, give an absolute "
                                   "path, or set BENCH_DATA_DIR")
            raise DataNotFound(f"text data not found: {path}; {how} into {path}, "
                               "or set BENCH_DATA_DIR to a directory that has it")
        if relative in DOWNLOADS:
            verify_official(path, DOWNLOADS[relative][1], "fetch it again with `python -m bench download text --force`")
        paths.append(path)
    return paths


def _json_lines(path: Path, text_key: str, label_key: str) -> Iterator[tuple[str, str, str]]:
    with path.open("rb") as handle:  # decoded line by line, so a bad byte is reported with its line
        for number, raw in enumerate(handle, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BenchError(f"{where}: not UTF-8 text (byte {exc.start + 1} of the line); save the file as "
                                 "UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BenchError(f"{where}: not a JSON object ({exc.msg}); each line must be "
                                 f'{{"{text_key}": ..., "{label_key}": ...}}') from None
            if not isinstance(row, dict):
                raise BenchError(f'{where}: expected a JSON object {{"{text_key}": ..., "{label_key}": ...}}, '
                                 f"got {type(row).__name__}")
            for key in (text_key, label_key):
                if key not in row or row[key] is None or (isinstance(row[key], str) and not row[key].strip()):
                    raise BenchError(f"{where}: the line has no {key!r}; each line must be "
                                     f'{{"{text_key}": ..., "{label_key}": ...}}')
            text = row[text_key]
            if isinstance(text, list):  # some processed copies store tokens
                text = " ".join(map(str, text))
            if not isinstance(text, str) or isinstance(row[label_key], (dict, list)):
                raise BenchError(f"{where}: {text_key!r} must be a string and {label_key!r} a string or number")
            yield text, str(row[label_key]), where


def _banking77_csv(path: Path) -> Iterator[tuple[str, str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header != ["text", "category"]:
            raise BenchError(f"{path}:1: expected the header 'text,category' of BANKING77's CSV files, got {header}")
        for number, row in enumerate(reader, 2):
            if len(row) != 2 or not row[0].strip() or not row[1].strip():
                raise BenchError(f"{path}:{number}: expected two non-empty fields text,category, got {row}")
            yield row[0], row[1], f"{path}:{number}"


def _clinc150_json(path: Path) -> Iterator[tuple[str, str, str]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); download it again") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(s), list) for s in SPLITS):
        raise BenchError(f"{path}: expected CLINC150's data_full.json with lists 'train', 'val' and 'test'")
    for split in SPLITS:  # the oos_* rows are out-of-scope queries, not an intent
        for index, row in enumerate(data[split]):
            if not (isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) and v for v in row)):
                raise BenchError(f"{path}: {split}[{index}] must be [text, intent], got {row!r}")
            yield row[0], row[1], f"{path}:{split}[{index}]"


def _read(path: Path, format: str) -> Iterator[tuple[str, str, str]]:
    try:
        yield from _read_format(path, format)
    except UnicodeDecodeError as exc:  # the CSV and JSON readers decode whole blocks
        raise BenchError(f"{path}: not UTF-8 text ({exc.reason}); save the file as UTF-8 or download it again") from None


def _read_format(path: Path, format: str) -> Iterator[tuple[str, str, str]]:
    if format in ("bao-json", "hwu64-json"):
        return _json_lines(path, "raw", "label")
    if format == "jsonl":
        return _json_lines(path, "text", "label")
    if format == "banking77-csv":
        return _banking77_csv(path) if path.suffix == ".csv" else iter(())  # categories.json lists the names only
    if format == "clinc150-json":
        return _clinc150_json(path)
    raise AssertionError(f"no reader for text format {format!r}")


def load_examples(config: TextData) -> TextExamples:
    """Every example of the dataset's files, in file order."""
    texts: list[str] = []
    labels: list[str] = []
    digest = hashlib.sha256(config.format.encode())
    for path in required_files(config):
        digest.update(file_sha256(path).encode())
        for text, label, _ in _read(path, config.format):
            texts.append(text)
            labels.append(label)
    if not texts:
        raise BenchError(f"{', '.join(config.files)}: no examples found; check the files and data.format")
    return TextExamples(tuple(texts), tuple(labels), digest.hexdigest()[:20])


def split_members(config: TextData, examples: TextExamples) -> dict[str, list[str]]:
    """Each split's class names, checked: every listed class exists and no split is empty."""
    sizes = examples.class_sizes()
    for split in SPLITS:
        classes = config.split.get(split, ())
        if not classes:
            raise BenchError(f"text data {', '.join(config.files)}: split {split!r} lists no classes; "
                             "give it classes in the suite's data.split")
        unknown = [c for c in classes if c not in sizes]
        if unknown:
            raise BenchError(f"text data {', '.join(config.files)}: split {split!r} lists class {unknown[0]!r}, which has "
                             f"no examples in the files (classes there: {', '.join(sorted(sizes)[:8])}...)")
    return {split: list(config.split[split]) for split in SPLITS}


def class_sizes(config: TextData) -> dict[str, dict[str, int]]:
    """Examples of each class of each split (reads the text files)."""
    examples = load_examples(config)
    sizes = examples.class_sizes()
    return {s: {c: sizes[c] for c in classes} for s, classes in split_members(config, examples).items()}
