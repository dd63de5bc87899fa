"""Episode files: a fixed list of classification episodes that a suite evaluates on instead of
drawing its test episodes (suite field ``test_episodes: FILE``). ``bench episodes export`` writes
the episodes a suite draws; a paper's released test episodes can be written in the same format.

The format (JSON; docs/episode-files.md has a worked example)::

    {"format": "bench-episodes", "version": 1,
     "suite": "omniglot-5w1s", "data_kind": "omniglot",     # where it came from (informative)
     "ways": 5, "shots": 1, "queries": 15,
     "episodes": [{"split": "test",
                   "classes": ["Atlantean/character01/rot000", ...],  # label i is classes[i]
                   "support": [[label, example], ...],              # shots per label
                   "query": [[label, example], ...]}, ...]}          # queries per label

An example is named by its class and its position among that class's examples in the dataset's
own order (the order of the data kind's reader: sorted file names for image archives, file order
for text), so an id is stable for as long as the data files are the same. A suite that reads a file
records the SHA-256 of its bytes in its protocol: results on fixed-file episodes never share a
leaderboard row with results on drawn ones. Everything that can be wrong with a file (not JSON,
cut short, an unknown class or example, a label out of range, a class of another split, an example
both in the support and the query set) is one error before any work.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, ValidationError

from bench.config import SplitName, StrictModel, Suite, plugin_data_kind, read_episode_file_bytes
from bench.datasets import dataset_module
from bench.datasets.shapes import class_sizes
from bench.errors import BenchError, did_you_mean

FORMAT = "bench-episodes"
VERSION = 1


class Episode(StrictModel):
    split: SplitName
    classes: tuple[str, ...] = Field(min_length=1)
    support: tuple[tuple[int, int], ...] = Field(min_length=1)
    query: tuple[tuple[int, int], ...] = Field(min_length=1)


class EpisodeList(StrictModel):
    format: Literal["bench-episodes"]
    version: Literal[1]
    description: str | None = None  # where the episodes come from (a paper, a release), for the reader
    suite: str | None = None
    data_kind: str | None = None
    episode_seed: int | None = None
    ways: int = Field(ge=2)
    shots: int = Field(ge=1)
    queries: int = Field(ge=1)
    episodes: tuple[Episode, ...] = Field(min_length=1)


@dataclass(frozen=True)
class EpisodeFile:
    path: Path
    sha256: str  # of the bytes parsed into ``content``
    content: EpisodeList

    def __len__(self) -> int:
        return len(self.content.episodes)


def _shape_problem(index: int, episode: Episode, ways: int, shots: int, queries: int) -> str | None:
    if len(episode.classes) != ways:
        return f"episode {index} has {len(episode.classes)} classes, the file says ways = {ways}"
    if len(set(episode.classes)) != ways:
        repeated = next(c for c, n in Counter(episode.classes).items() if n > 1)
        return f"episode {index} names class {repeated!r} twice"
    for part, wanted in (("support", shots), ("query", queries)):
        examples = getattr(episode, part)
        for label, example in examples:
            if not 0 <= label < ways:
                return f"episode {index}: {part} label {label} is out of range 0..{ways - 1}"
            if example < 0:
                return f"episode {index}: {part} example {example} of label {label} is negative"
        counts = Counter(label for label, _ in examples)
        for label in range(ways):
            if counts[label] != wanted:
                return (f"episode {index}: label {label} has {counts[label]} {part} examples, the file says "
                        f"{'shots' if part == 'support' else 'queries'} = {wanted}")
    for name, pairs in (("support", episode.support), ("query", episode.query)):
        twice = [pair for pair, n in Counter(pairs).items() if n > 1]
        if twice:
            label, example = min(twice)
            return f"episode {index}: example {example} of class {episode.classes[label]!r} is in the {name} set twice"
    both = set(episode.support) & set(episode.query)
    if both:
        label, example = min(both)
        return (f"episode {index}: example {example} of class {episode.classes[label]!r} is in both the support and "
                "the query set")
    return None


def read_episode_file(path: Path, expected_sha256: str | None = None) -> EpisodeFile:
    """The file parsed and checked on its own (not yet against a dataset); ``expected_sha256``: the
    hash the suite recorded when it was loaded (the file must not have changed since)."""
    data = read_episode_file_bytes(path)
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise BenchError(f"episode file {path} changed since the suite was loaded (SHA-256 {sha256[:12]}, "
                         f"recorded {expected_sha256[:12]}); start again")
    try:
        raw = json.loads(data)
    except UnicodeDecodeError as exc:
        raise BenchError(f"episode file {path}: not UTF-8 text (byte {exc.start}); it is not an episode file") from None
    except RecursionError:
        raise BenchError(f"episode file {path}: not an episode file (nested too deeply)") from None
    except ValueError as exc:
        # Cut short: the parser ran out of text mid-string or where more had to follow.
        cut = (" (the file looks cut short: write it again)" if isinstance(exc, json.JSONDecodeError) and (
            exc.msg.startswith("Unterminated string") or exc.pos >= len(data.rstrip())) else "")
        raise BenchError(f"episode file {path}: not valid JSON ({exc}){cut}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise BenchError(f"episode file {path}: not a bench episode file (no \"format\": \"{FORMAT}\"); "
                         "see docs/episode-files.md")
    if raw.get("version") != VERSION:
        raise BenchError(f"episode file {path}: format version {raw.get('version')!r}, this bench reads version {VERSION}")
    try:
        content = EpisodeList.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(map(str, error["loc"]))
        raise BenchError(f"episode file {path}: field {where!r}: {error['msg']}") from None
    for index, episode in enumerate(content.episodes):
        if problem := _shape_problem(index, episode, content.ways, content.shots, content.queries):
            raise BenchError(f"episode file {path}: {problem}")
    return EpisodeFile(path, sha256, content)


def check_against(episodes: EpisodeFile, suite: Suite, split: SplitName, sizes: dict[str, dict[str, int]] | None) -> None:
    """Raise the ``BenchError`` that names the first thing the suite's data cannot supply:
    ``sizes`` is the suite's ``class_sizes`` (examples of each class of each split; None: the class
    names are not known yet, check the file against the protocol only)."""
    where = f"episode file {episodes.path}"
    content, shape = episodes.content, suite.episode_shape["eval"]
    if (content.ways, content.shots, content.queries) != (shape["ways"], shape["shots"], shape["queries"]):
        raise BenchError(f"{where} holds {content.ways}-way {content.shots}-shot episodes with {content.queries} queries, "
                         f"suite {suite.name!r} evaluates {shape['ways']}-way {shape['shots']}-shot with {shape['queries']}: "
                         "use a suite of the file's protocol, or set suite.ways, suite.shots and suite.queries to it")
    if suite.test_tasks > len(episodes):
        raise BenchError(f"{where} has {len(episodes)} episodes, suite {suite.name!r} (tier {suite.tier}) evaluates "
                         f"{suite.test_tasks}: lower --set suite.test_tasks=N or give the file more episodes")
    for index, episode in enumerate(content.episodes[: suite.test_tasks]):
        if episode.split != split:
            raise BenchError(f"{where}: episode {index} is from split {episode.split!r}; a suite's test_episodes "
                             f"must be {split} episodes")
    if sizes is None:
        return
    home = {name: s for s, classes in sizes.items() for name in classes}
    for index, episode in enumerate(content.episodes[: suite.test_tasks]):
        for label, name in enumerate(episode.classes):
            if name not in sizes.get(split, {}):
                if name in home:
                    raise BenchError(f"{where}: episode {index}: class {name!r} is in the {home[name]!r} split of "
                                     f"{suite.name!r}, not {split!r} (its classes must not overlap the other splits)")
                raise BenchError(f"{where}: episode {index}: class {name!r} is not in the data of suite "
                                 f"{suite.name!r}; {did_you_mean(name, sizes.get(split, {}))}")
            size = sizes[split][name]
            for part in (episode.support, episode.query):
                for example_label, example in part:
                    if example_label == label and example >= size:
                        raise BenchError(f"{where}: episode {index}: class {name!r} has {size} examples "
                                         f"(0..{size - 1}), the file names example {example}")


def episode_indices(episodes: EpisodeFile, split_classes: list[str], indices: range) -> tuple[torch.Tensor, torch.Tensor]:
    """Episodes ``indices`` of the file as a task source draws them: each episode's classes as
    positions in the split's class list (B, ways), and per class its support then query examples
    (B, ways, shots + queries), class by class in label order."""
    content = episodes.content
    if indices.stop > len(episodes):
        raise BenchError(f"episode file {episodes.path} has {len(episodes)} episodes; episode {indices.stop - 1} was asked for")
    position = {name: i for i, name in enumerate(split_classes)}
    k = content.shots + content.queries
    classes = torch.empty(len(indices), content.ways, dtype=torch.long)
    examples = torch.empty(len(indices), content.ways, k, dtype=torch.long)
    for row, index in enumerate(indices):
        episode = content.episodes[index]
        classes[row] = torch.tensor([position[name] for name in episode.classes])
        for label in range(content.ways):
            chosen = [e for lbl, e in episode.support if lbl == label] + [e for lbl, e in episode.query if lbl == label]
            examples[row, label] = torch.tensor(chosen)
    return classes, examples


def to_file_content(suite: Suite, split: SplitName, split_classes: list[str], classes: torch.Tensor,
                    examples: torch.Tensor) -> dict[str, Any]:
    """Drawn episodes (classes (B, ways) as positions in ``split_classes``, examples (B, ways, k)) in the file format."""
    shape = suite.episode_shape["eval"]
    shots = shape["shots"]
    episodes = []
    for chosen, picked in zip(classes.tolist(), examples.tolist(), strict=True):
        episodes.append({"split": split, "classes": [split_classes[c] for c in chosen],
                         "support": [[label, e] for label, row in enumerate(picked) for e in row[:shots]],
                         "query": [[label, e] for label, row in enumerate(picked) for e in row[shots:]]})
    return {"format": FORMAT, "version": VERSION, "suite": suite.name, "data_kind": suite.data.kind,
            "ways": shape["ways"], "shots": shots, "queries": shape["queries"], "episode_seed": suite.episode_seed,
            "episodes": episodes}


def dumps(content: dict[str, Any]) -> str:
    """The file's text: the header on the first line, then one episode per line (diffable, greppable)."""
    header = json.dumps({k: v for k, v in content.items() if k != "episodes"})
    lines = ",\n".join(json.dumps(episode, separators=(",", ":")) for episode in content["episodes"])
    return f'{header[:-1]}, "episodes": [\n{lines}\n]}}\n'


def load_test_episodes(suite: Suite, sizes: dict[str, dict[str, int]]) -> EpisodeFile | None:
    """The suite's ``test_episodes`` file, read (its bytes must hash as when the suite was loaded) and
    checked against ``sizes`` (the data's examples per class per split); None when the suite draws."""
    path = suite.test_episodes_path()
    if path is None:
        return None
    episodes = read_episode_file(path, suite.test_episodes_sha256)
    check_against(episodes, suite, "test", sizes)
    return episodes


def check_test_episodes(suite: Suite, sizes: dict[str, dict[str, int]] | None = None) -> None:
    """Before any work: the suite's episode file, if it has one, can be read and its data supplies it
    (``sizes``: the suite's ``class_sizes`` when already counted)."""
    if suite.test_episodes is None:
        return
    if plugin_data_kind(suite.data.kind) is not None:
        raise BenchError(f"suite {suite.name!r}: test_episodes works with bench's image and text data kinds; data kind "
                         f"{suite.data.kind!r} comes from a plugin, whose task source draws its own episodes")
    if not getattr(dataset_module(suite.data.kind), "CLASS_NAMES_BEFORE_LOADING", True):
        # The class names are read with the data itself: the task source checks them, before training.
        check_against(read_episode_file(suite.test_episodes_path() or Path(), suite.test_episodes_sha256), suite, "test", None)
        return
    load_test_episodes(suite, sizes if sizes is not None else class_sizes(suite) or {})


def export_episodes(suite: Suite, split: SplitName = "test", count: int | None = None) -> dict[str, Any]:
    """The first ``count`` (default: the suite's ``test_tasks``) episodes the suite evaluates on in
    ``split``, in the file format: evaluating on the file gives the same per-episode values."""
    from bench.tasks import make_task_source  # the package imports this module's readers' modules

    if suite.task_type != "classification":
        raise BenchError(f"suite {suite.name!r} is a {suite.task_type} suite: its tasks are generated, not drawn from a "
                         "dataset, so there are no episodes of examples to export")
    source = make_task_source(suite)
    classes, examples = source.episode_examples(split, suite.episode_seed, range(count or suite.test_tasks))  # type: ignore[attr-defined]
    return to_file_content(suite, split, source.split_class_names[split], classes, examples)  # type: ignore[attr-defined]
