"""Episode files: export the episodes a suite draws, evaluate on a fixed file, and refuse a bad
file in one line before any work."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.config import load_suite
from bench.errors import BenchError
from bench.results.leaderboard import leaderboards, title
from bench.tasks.episode_files import read_episode_file
from bench.tasks.text import TextTasks
from tests.conftest import HAS_OMNIGLOT, read_records
from tests.tasks.test_text import generated_dataset

CPU = torch.device("cpu")


def exported(cli, suite: Path | str, out: Path, *args: str) -> dict:
    code, printed, err = cli("episodes", "export", str(suite), "--out", str(out), *args)
    assert code == 0, err
    assert printed.strip() == str(out)
    return json.loads(out.read_text())


def test_an_exported_file_holds_the_drawn_episodes_by_class_and_position(cli, tmp_path):
    suite_file = generated_dataset(tmp_path)
    content = exported(cli, suite_file, tmp_path / "test.json", "--count", "7")
    suite = load_suite(str(suite_file))
    source = TextTasks(suite, CPU)
    classes, examples = source.episode_examples("test", suite.episode_seed, range(7))
    assert (content["format"], content["version"], content["ways"], content["shots"], content["queries"]) == (
        "bench-episodes", 1, 3, 2, 4)
    assert len(content["episodes"]) == 7
    for episode, chosen, picked in zip(content["episodes"], classes.tolist(), examples.tolist(), strict=True):
        assert episode["split"] == "test"
        assert episode["classes"] == [source.split_class_names["test"][c] for c in chosen]
        assert episode["support"] == [[label, e] for label, row in enumerate(picked) for e in row[:2]]
        assert episode["query"] == [[label, e] for label, row in enumerate(picked) for e in row[2:]]
    # One episode per line after the header: a diff shows which episodes changed.
    assert len((tmp_path / "test.json").read_text().splitlines()) == 1 + 7 + 1


def test_evaluating_on_the_exported_file_gives_the_drawn_values_in_a_table_of_its_own(cli, tmp_path):
    suite_file = generated_dataset(tmp_path)
    episodes = tmp_path / "test.json"
    exported(cli, suite_file, episodes, "--tier", "smoke")
    common = ["--tier", "smoke", "--algorithms", "protonet,maml", "--task-chunk", "2", "--eval-chunk", "10"]
    assert cli("run", str(suite_file), *common, "--results-dir", str(tmp_path / "drawn"))[0] == 0
    assert cli("run", str(suite_file), *common, "--set", f"suite.test_episodes={episodes}",
               "--results-dir", str(tmp_path / "fixed"))[0] == 0
    drawn = {r["algorithm"]["name"]: r for r in read_records(tmp_path / "drawn")}
    fixed = {r["algorithm"]["name"]: r for r in read_records(tmp_path / "fixed")}
    sha256 = hashlib.sha256(episodes.read_bytes()).hexdigest()
    for name in ("protonet", "maml"):
        assert fixed[name]["metric"]["per_task"] == drawn[name]["metric"]["per_task"], name
        assert fixed[name]["suite"]["protocol"]["test_episodes_sha256"] == sha256
        assert "test_episodes_sha256" not in drawn[name]["suite"]["protocol"]
        assert fixed[name]["suite"]["protocol_hash"] != drawn[name]["suite"]["protocol_hash"]
    # Both in one results directory: never one row, two tables, the fixed one says so.
    merged = tmp_path / "merged"
    for directory in ("drawn", "fixed"):
        shutil.copytree(tmp_path / directory, merged, dirs_exist_ok=True)
    tables = leaderboards(merged, "byo", "smoke")
    assert len(tables) == 2
    titles = sorted(title(description) for description, _ in tables)
    assert sum(f"from an episode file (SHA-256 {sha256[:12]})" in t for t in titles) == 1


@pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")
def test_omniglot_images_evaluate_on_their_exported_episodes_identically(cli, tmp_path):
    episodes = tmp_path / "omniglot-test.json"
    content = exported(cli, "omniglot-5w1s", episodes, "--tier", "smoke")
    assert content["episodes"][0]["classes"][0].count("/") == 2  # Alphabet/characterNN/rotDDD
    common = ["--tier", "smoke", "--algorithms", "protonet", "--set", "suite.meta_iterations=4",
              "--set", "suite.val_every=2"]
    assert cli("run", "omniglot-5w1s", *common, "--results-dir", str(tmp_path / "drawn"))[0] == 0
    assert cli("run", "omniglot-5w1s", *common, "--set", f"suite.test_episodes={episodes}",
               "--results-dir", str(tmp_path / "fixed"))[0] == 0
    (drawn,), (fixed,) = read_records(tmp_path / "drawn"), read_records(tmp_path / "fixed")
    assert fixed["metric"]["per_task"] == drawn["metric"]["per_task"]
    assert len(fixed["metric"]["per_task"]) == load_suite("omniglot-5w1s", tier="smoke").test_tasks


def _edited(path: Path, edit) -> Path:
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))
    return path


def _set(episode: int, part: str, value) -> callable:
    def edit(content: dict) -> None:
        content["episodes"][episode][part] = value(content["episodes"][episode][part])
    return edit


BAD_FILES = [
    (_set(2, "classes", lambda c: ["topic99", *c[1:]]), "episode 2: class 'topic99' is not in the data"),
    (_set(1, "classes", lambda c: ["topic0", *c[1:]]), "class 'topic0' is in the 'train' split"),
    (_set(0, "query", lambda q: [[q[0][0], 12], *q[1:]]), "has 12 examples (0..11), the file names example 12"),
    (_set(3, "support", lambda s: [[7, s[0][1]], *s[1:]]), "episode 3: support label 7 is out of range 0..2"),
    (_set(0, "query", lambda q: [[s_label, s_example] for s_label, s_example in q[:1]] * 2 + q[2:]),
     "is in the query set twice"),
    (_set(4, "split", lambda _: "val"), "episode 4 is from split 'val'"),
    (_set(0, "support", lambda s: s[:1]), "episode 0: label 0 has 1 support examples, the file says shots = 2"),
    (lambda c: c.update(version=2), "format version 2, this bench reads version 1"),
    (lambda c: c.update(shots=1, episodes=[{**e, "support": e["support"][::2]} for e in c["episodes"]]),
     "holds 3-way 1-shot episodes with 4 queries, suite 'byo' evaluates 3-way 2-shot"),
    (lambda c: c.update(episodes=c["episodes"][:5]), "has 5 episodes, suite 'byo' (tier smoke) evaluates 30"),
    (lambda c: c.pop("format"), "not a bench episode file"),
]


@pytest.mark.parametrize(("edit", "message"), BAD_FILES)
def test_a_bad_episode_file_is_one_line_and_exit_2_before_any_work(cli, tmp_path, edit, message):
    suite_file = generated_dataset(tmp_path)
    episodes = tmp_path / "test.json"
    exported(cli, suite_file, episodes, "--tier", "smoke")
    _edited(episodes, edit)
    code, _, err = cli("run", str(suite_file), "--tier", "smoke", "--algorithms", "protonet",
                       "--set", f"suite.test_episodes={episodes}", "--results-dir", str(tmp_path / "results"))
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "results").exists()


def test_an_example_in_both_the_support_and_the_query_set_is_refused(tmp_path, cli):
    suite_file = generated_dataset(tmp_path)
    episodes = exported(cli, suite_file, tmp_path / "test.json", "--count", "3")
    episodes["episodes"][1]["query"][0] = episodes["episodes"][1]["support"][0]
    (tmp_path / "test.json").write_text(json.dumps(episodes))
    with pytest.raises(BenchError, match="episode 1: example .* is in both the support and the query set"):
        read_episode_file(tmp_path / "test.json")


def test_a_cut_short_file_and_a_changed_file_are_named(tmp_path, cli):
    suite_file = generated_dataset(tmp_path)
    path = tmp_path / "test.json"
    exported(cli, suite_file, path, "--count", "3")
    whole = path.read_bytes()
    loaded = read_episode_file(path)
    assert loaded.sha256 == hashlib.sha256(whole).hexdigest() and len(loaded) == 3
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(BenchError, match="not valid JSON .*cut short"):
        read_episode_file(path)
    path.write_bytes(whole.replace(b'"split":"test"', b'"split":"test" ', 1))
    with pytest.raises(BenchError, match="changed since the suite was loaded"):
        read_episode_file(path, expected_sha256=loaded.sha256)


def test_a_suite_file_names_its_episode_file_relative_to_itself_and_validate_checks_it(cli, tmp_path):
    suite_file = generated_dataset(tmp_path)
    exported(cli, suite_file, tmp_path / "fixed-test.json", "--tier", "smoke")
    fixed_suite = tmp_path / "byo-fixed.yaml"
    fixed_suite.write_text(suite_file.read_text().replace("name: byo", "name: byo-fixed") + "test_episodes: fixed-test.json\n")
    suite = load_suite(str(fixed_suite), tier="smoke")
    assert suite.test_episodes_path() == tmp_path / "fixed-test.json"
    sha256 = hashlib.sha256((tmp_path / "fixed-test.json").read_bytes()).hexdigest()
    assert suite.protocol_fields()["test_episodes_sha256"] == sha256
    assert cli("validate", str(fixed_suite))[0] == 0  # every tier evaluates the 30 the file holds
    exported(cli, suite_file, tmp_path / "fixed-test.json", "--count", "10", "--force")
    code, _, err = cli("validate", str(fixed_suite))
    assert code == 2 and "has 10 episodes, suite 'byo-fixed' (tier smoke) evaluates 30" in err, err
    (tmp_path / "fixed-test.json").unlink()
    with pytest.raises(BenchError, match="test_episodes file .*fixed-test.json not found; write one with"):
        load_suite(str(fixed_suite))


def test_a_regression_suite_has_no_episode_files(cli, tmp_path):
    code, _, err = cli("episodes", "export", "sine", "--out", str(tmp_path / "sine.json"))
    assert code == 2 and "regression suite: its tasks are generated" in err
    assert not (tmp_path / "sine.json").exists()
    (tmp_path / "x.json").write_text("{}")
    code, _, err = cli("run", "sine", "--set", f"suite.test_episodes={tmp_path / 'x.json'}", "--dry-run")
    assert code == 2 and "test_episodes applies to classification suites" in err


def test_export_keeps_an_existing_file_unless_forced(cli, tmp_path):
    suite_file = generated_dataset(tmp_path)
    out = tmp_path / "test.json"
    out.write_text("mine")
    code, _, err = cli("episodes", "export", str(suite_file), "--out", str(out))
    assert code == 2 and "exists; give another --out, or --force" in err and out.read_text() == "mine"
    exported(cli, suite_file, out, "--force", "--count", "2")
