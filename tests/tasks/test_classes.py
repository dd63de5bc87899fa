"""Classification episodes' indices: grouped sampling draws every episode's classes from one group."""

from __future__ import annotations

import re

import pytest
import torch

from bench.config import load_suite
from bench.errors import BenchError
from bench.tasks.images import ImageTasks
from bench.tasks.text import TextTasks
from tests.conftest import HAS_OMNIGLOT
from tests.tasks.test_text import generated_dataset

CPU = torch.device("cpu")


def grouped_dataset(tmp_path, groups: int = 4, per_group: int = 4):
    """Text classes named group/topic, so that the class name's first part is its group."""
    suite_file = generated_dataset(tmp_path, n_classes=3 * groups * per_group)
    text = suite_file.read_text()
    data = (tmp_path / "data.jsonl").read_text()
    def grouped(match: re.Match) -> str:
        return f"g{int(match[1]) // per_group}/topic{match[1]}"

    suite_file.write_text(re.sub(r"\btopic(\d+)\b", grouped, text))
    (tmp_path / "data.jsonl").write_text(re.sub(r"\btopic(\d+)\b", grouped, data))
    return suite_file


def groups_of(source, split: str, n: int, seed: int = 0) -> list[set[str]]:
    classes, _ = source.episode_examples(split, seed, range(n))
    names = source.split_class_names[split]
    return [{names[c].split("/")[0] for c in row} for row in classes.tolist()]


def test_grouped_episodes_take_all_classes_from_one_group_and_are_a_protocol_of_their_own(tmp_path):
    suite_file = grouped_dataset(tmp_path)
    drawn = load_suite(str(suite_file))
    grouped = load_suite(str(suite_file), overrides={"grouped_episodes": True})
    assert grouped.protocol_fields()["grouped_episodes"] is True and "grouped_episodes" not in drawn.protocol_fields()
    assert grouped.protocol_hash() != drawn.protocol_hash()
    grouped_source, drawn_source = TextTasks(grouped, CPU), TextTasks(drawn, CPU)
    for split in ("train", "val", "test"):
        assert all(len(g) == 1 for g in groups_of(grouped_source, split, 40)), split
        assert any(len(g) > 1 for g in groups_of(drawn_source, split, 40)), split
        # Every group that can make an episode is drawn, and an episode is still a pure function of its index.
        assert len(set().union(*groups_of(grouped_source, split, 40))) == 4
        whole = grouped_source.episode_examples(split, 3, range(9))
        part = grouped_source.episode_examples(split, 3, range(5, 9))
        assert all(torch.equal(w[5:], p) for w, p in zip(whole, part, strict=True))


def test_grouped_episodes_need_a_group_with_enough_classes(tmp_path, cli):
    suite_file = grouped_dataset(tmp_path, groups=4, per_group=2)  # 2 classes per group, 3 ways
    code, _, err = cli("run", str(suite_file), "--set", "suite.grouped_episodes=true", "--dry-run")
    assert code == 2 and len(err.splitlines()) == 1
    assert "no group of split 'train' has 3 classes (the largest has 2)" in err, err
    with pytest.raises(BenchError, match="grouped_episodes applies to classification suites"):
        load_suite("sine", overrides={"grouped_episodes": True})


@pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")
def test_grouped_omniglot_episodes_are_within_one_alphabet():
    source = ImageTasks(load_suite("omniglot-5w1s", tier="smoke", overrides={"grouped_episodes": True}), CPU)
    for split in ("train", "test"):
        alphabets = groups_of(source, split, 50)
        assert all(len(a) == 1 for a in alphabets) and len(set().union(*alphabets)) > 10, split
