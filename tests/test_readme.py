from __future__ import annotations

import importlib.util

from tests.conftest import ROOT


def load_tool():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "tools" / "update_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_are_generated_from_the_committed_records():
    text = (ROOT / "README.md").read_text()
    assert "<!-- leaderboard:" in text
    assert load_tool().regenerate(text) == text, "run python tools/update_readme.py"


def test_report_pages_are_generated_from_the_committed_records():
    pages = load_tool().report_pages()
    assert pages, "results/ holds no records"
    for path, text in pages.items():
        assert path.exists() and path.read_text() == text, f"{path} is stale: run python tools/update_readme.py"


def test_readme_commands_match_ci_and_tox():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install tox && tox" in readme and "python3 -m tox run -e py311" in ci
    assert "pip install tox && tox -e bench -- run sine" in readme
