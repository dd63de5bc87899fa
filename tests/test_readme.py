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


def test_docs_tables_are_generated_from_the_committed_records():
    text = (ROOT / "docs" / "reproducibility.md").read_text()
    assert "<!-- chunks -->" in text and "<!-- reproduce -->" in text
    assert load_tool().regenerate(text) == text, "run python tools/update_readme.py"


def test_the_committed_report_is_generated_from_the_committed_records(tmp_path):
    """report/ is `python -m bench report`'s output for results/: its tables must match a fresh build
    and every figure it links must exist (figure bytes depend on the matplotlib and font versions)."""
    from bench.results.report import build_report

    written = build_report(ROOT / "results", tmp_path)
    committed = ROOT / "report"
    for path in written:
        target = committed / path.relative_to(tmp_path)
        assert target.exists(), f"{target} is missing: run python -m bench report"
        if path.suffix in (".md", ".tex", ".csv"):
            assert target.read_text() == path.read_text(), f"{target} is stale: run python -m bench report"


def test_readme_commands_match_ci_and_tox():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install tox && tox" in readme and "python3 -m tox run -e py311" in ci
    assert "pip install tox && tox -e bench -- run sine" in readme
