from __future__ import annotations

import hashlib
import math

import pytest

from bench.config import REQUIRED_TIERS, available_suites, load_suite
from bench.errors import BenchError
from tests.conftest import ROOT


@pytest.mark.parametrize("name", available_suites())
def test_every_committed_suite_loads_at_every_tier(name):
    tiers = load_suite(name).tiers
    assert set(REQUIRED_TIERS) <= set(tiers)
    for tier in tiers:
        suite = load_suite(name, tier=tier)
        assert suite.tier == tier
        assert len(suite.protocol_hash()) == 16


def test_the_suite_file_hash_covers_its_includes(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text((ROOT / "suites" / "sine.yaml").read_text())
    child = tmp_path / "child.yaml"
    child.write_text("include: base.yaml\nname: child\n")
    before = load_suite(str(child)).file_sha256
    base.write_text(base.read_text().replace("val_tasks: 100", "val_tasks: 99"))
    assert load_suite(str(child)).file_sha256 != before
    assert load_suite(str(base)).file_sha256 == hashlib.sha256(base.read_bytes()).hexdigest()


def test_sine_follows_the_published_protocol():
    suite = load_suite("sine", tier="paper")
    assert suite.data.amplitude_range == (0.1, 5.0)
    assert suite.data.phase_range == (0.0, math.pi)
    assert suite.data.input_range == (-5.0, 5.0)
    assert suite.model.hidden == (40, 40) and suite.model.activation == "relu"
    assert (suite.shots, suite.queries, suite.meta_batch_size) == (10, 10, 25)
    assert (suite.meta_iterations, suite.test_tasks, suite.test_inner_steps) == (70000, 600, 10)
    assert suite.algorithms["maml"]["inner_lr"] == 0.01
    assert [load_suite(f"sine-k{k}").shots for k in (5, 20)] == [5, 20]


def test_tiers_override_the_budget_and_the_default_tier_is_standard():
    smoke, standard = load_suite("sine", tier="smoke"), load_suite("sine")
    assert standard.tier == "standard"
    assert smoke.meta_iterations < standard.meta_iterations < load_suite("sine", tier="paper").meta_iterations
    assert smoke.protocol_fields()["test_tasks"] < standard.protocol_fields()["test_tasks"]


def test_include_overrides_only_the_given_keys():
    base, variant = load_suite("sine"), load_suite("sine-k5")
    assert variant.shots == 5 and variant.meta_batch_size == base.meta_batch_size
    assert variant.protocol_hash() != base.protocol_hash()


def test_overrides_win_and_are_recorded():
    suite = load_suite("sine", tier="smoke", overrides={"test_tasks": 7}, override_texts=("suite.test_tasks=7",))
    assert suite.test_tasks == 7 and suite.overrides == ("suite.test_tasks=7",)


def write(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def sine_text(**replacements):
    from tests.conftest import ROOT

    text = (ROOT / "suites" / "sine.yaml").read_text()
    for old, new in replacements.items():
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("shots: 10", "shots: 0", r"field 'shots': Input should be greater than or equal to 1 \(got 0\)"),
        ("shots: 10", "shotz: 10", r"unknown field 'shotz'; did you mean 'shots'"),
        ("meta_batch_size: 25", "meta_batch_size: many", r"field 'meta_batch_size': Input should be a valid integer"),
        ("amplitude_range: [0.1, 5.0]", "amplitude_range: [5.0, 0.1]", r"field 'data': amplitude_range must be \[low, high\]"),
        ("kind: mlp", "kind: transformer",
         r"field 'model': Input tag 'transformer' found using 'kind' does not match any of the expected tags"),
        ("smoke: {meta_iterations: 40", "smoke: {meta_iterations: -1",
         r"field 'tiers.smoke.meta_iterations': Input should be greater than or equal to 1"),
        ("metric: mse", "metric: accuracy", r"metric 'accuracy' needs task_type 'classification'"),
        ("test_inner_steps: 10\n", "", r"field 'test_inner_steps' is required"),
    ],
)
def test_a_bad_field_names_the_file_and_the_field(tmp_path, old, new, message):
    path = write(tmp_path, sine_text(**{old: new}))
    with pytest.raises(BenchError, match=message) as info:
        load_suite(str(path), tier="smoke")
    assert str(info.value).startswith(str(path))
    assert "\n" not in str(info.value)


def test_broken_yaml_and_non_mapping_files(tmp_path):
    with pytest.raises(BenchError, match="not valid YAML"):
        load_suite(str(write(tmp_path, "name: [unclosed")))
    with pytest.raises(BenchError, match="must be a YAML mapping"):
        load_suite(str(write(tmp_path, "- a list")))


def test_unknown_suite_and_tier_suggest_names():
    with pytest.raises(BenchError, match=r"unknown suite 'sin'; did you mean 'sine'"):
        load_suite("sin")
    with pytest.raises(BenchError, match=r"unknown tier 'smok'; did you mean 'smoke'"):
        load_suite("sine", tier="smok")


def test_include_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("include: b.yaml\n")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n")
    with pytest.raises(BenchError, match="include cycle"):
        load_suite(str(tmp_path / "a.yaml"))


@pytest.mark.parametrize(("name", "ways", "shots"), [("omniglot-5w1s", 5, 1), ("omniglot-5w5s", 5, 5),
                                                     ("omniglot-20w1s", 20, 1), ("omniglot-20w5s", 20, 5)])
def test_omniglot_variants_share_the_split_and_differ_in_ways_and_shots(name, ways, shots):
    suite, base = load_suite(name), load_suite("omniglot-5w1s")
    assert (suite.ways, suite.shots, suite.queries) == (ways, shots, 15)
    assert suite.data == base.data and suite.batch_norm == "transductive"
    assert {entry.algorithm for entry in suite.published} >= {"maml", "protonet", "matchingnet"}
    assert (suite.protocol_hash() == base.protocol_hash()) == (name == "omniglot-5w1s")
