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


def test_the_code_version_does_not_cover_another_algorithm_s_file(monkeypatch):
    maml = ALGORITHMS.get("maml")
    before = maml.code_version()
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: original(self) + (b"#" if self.name == "protonet.py" else b""))
    assert maml.code_version() == before
