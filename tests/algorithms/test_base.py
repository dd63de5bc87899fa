"""What an algorithm's code version covers."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.algorithms import ALGORITHMS


@pytest.mark.parametrize("changed", ["algorithms/maml.py", "algorithms/gradient.py", "algorithms/base.py",
                                     "models/conv4.py", "models/text.py", "tasks/base.py"])
def test_the_code_version_covers_the_algorithm_its_bases_the_networks_and_the_episodes(changed, monkeypatch):
    maml = ALGORITHMS.get("maml")
    before = maml.code_version()
    original = Path.read_bytes
    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", lambda self: original(self) + (b"#" if self.as_posix().endswith(changed) else b""))
        assert maml.code_version() != before
    assert maml.code_version() == before


@pytest.mark.parametrize(("name", "helper"), [("simpleshot", "protonet.py"), ("centroid", "protonet.py"),
                                            ("maml.l2l", "maml.py")])
def test_the_code_version_covers_the_algorithm_modules_it_imports_from(name, helper, monkeypatch):
    algorithm = ALGORITHMS.get(name)
    before = algorithm.code_version()
    original = Path.read_bytes
    with monkeypatch.context() as patch:
        patch.setattr(Path, "read_bytes", lambda self: original(self) + (b"#" if self.name == helper else b""))
        assert algorithm.code_version() != before
    assert algorithm.code_version() == before


def test_the_code_version_does_not_cover_another_algorithm_s_file(monkeypatch):
    maml = ALGORITHMS.get("maml")
    before = maml.code_version()
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: original(self) + (b"#" if self.name == "protonet.py" else b""))
    assert maml.code_version() == before


# Search spaces (what `bench tune` searches): declared beside each field, checked when the class is defined.


def test_every_registered_algorithm_declares_a_valid_search_space_that_bench_list_shows():
    from bench import api

    listed = {a["name"]: a["search_space"] for a in api.list_algorithms()}
    assert listed["maml"] == {"inner_lr": {"low": 1e-3, "high": 1.0, "log": True},
                              "inner_steps": {"low": 1, "high": 5, "log": False},
                              "outer_lr": {"low": 1e-4, "high": 1e-2, "log": True}}
    assert "inner_lr" not in listed["metasgd"]  # unused there: the learned rates replace it
    assert listed["transfer"]["finetune"] == {"choices": ["all", "head"]}
    assert listed["centroid"] == {}  # the floor has nothing to tune
    for name in ALGORITHMS.names():
        hparams = ALGORITHMS.get(name).Hparams
        for field, search in hparams.search_space().items():
            for value in search.bounds():  # every end of every space is a value the field takes
                hparams.model_validate({field: value})


@pytest.mark.parametrize(("arguments", "message"), [
    ({"low": 1e-2, "high": 1e-4}, "is empty or inverted"),
    ({"low": 0.1, "high": 0.1}, "is empty or inverted"),
    ({"low": 0.0, "high": 1.0, "log": True}, "needs low > 0"),
    ({"low": 0.1}, "needs both low and high"),
    ({"low": 0.1, "high": 1.0, "choices": ("a",)}, "not both"),
    ({"choices": ("a", "a")}, "repeat a value"),
])
def test_a_malformed_search_space_is_refused_where_it_is_written(arguments, message):
    from bench.algorithms.base import Search

    with pytest.raises(ValueError, match=message):
        Search(**arguments)


def test_a_search_space_beyond_what_its_field_accepts_fails_when_the_class_is_defined():
    from typing import Annotated

    from bench.algorithms.base import Hyperparameters, LearningRate, Search

    with pytest.raises(TypeError, match=r"Broken.lr: its search space .* holds -0.1, which the field refuses"):
        class Broken(Hyperparameters):
            lr: Annotated[LearningRate, Search(-0.1, 0.1)] = 0.01


def test_a_narrower_space_is_contained_and_a_wider_or_different_one_is_not():
    from bench.algorithms.base import Search

    space = Search(1e-4, 1e-2, log=True)
    assert space.contains(Search(1e-3, 1e-2, log=True))
    assert not space.contains(Search(1e-5, 1e-2, log=True)) and not space.contains(Search(1e-3, 1e-2))
    assert Search(choices=("all", "head")).contains(Search(choices=("head",)))
    assert not Search(choices=("all", "head")).contains(Search(choices=("none",)))
