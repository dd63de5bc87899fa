from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_docs_tables_are_generated_from_the_committed_records():
    texts = {path.relative_to(ROOT).as_posix(): path.read_text() for path in pages()}
    assert "<!-- chunks -->" in texts["docs/reproducibility.md"] and "<!-- reproduce -->" in texts["docs/reproducibility.md"]
    assert "<!-- leaderboard:" in texts["docs/results/vision.md"] and "<!-- perf -->" in texts["docs/performance.md"]
    assert "<!-- cli-reference -->" in texts["docs/reference/cli.md"]  # the command-line reference, from the parsers
    tool = load_tool()
    for name, text in texts.items():
        assert tool.regenerate(text) == text, f"{name}: run python tools/update_readme.py"


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found, fenced = set(), False
    for line in text.splitlines():
        fenced ^= line.startswith("```")
        if not fenced and line.startswith("#"):
            found.add(re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-"))
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text()):
            broken.append(f"{target} (no such heading)")
    return broken


def test_links_between_the_pages_resolve():
    broken = {path.relative_to(ROOT).as_posix(): found for path in pages() if (found := broken_links(path))}
    assert not broken


def test_the_link_check_sees_a_broken_link(tmp_path):
    (tmp_path / "a.md").write_text("# A page\n[ok](#a-page) [gone](b.md) [nohead](a.md#elsewhere)\n")
    assert broken_links(tmp_path / "a.md") == ["b.md (no such file)", "a.md#elsewhere (no such heading)"]


def test_the_readme_is_a_short_front_door():
    assert len((ROOT / "README.md").read_bytes()) <= 10_000


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


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)


def test_the_documentation_site_builds_strictly_with_every_page_and_the_api_reference(tmp_path):
    pytest.importorskip("mkdocs")
    done = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    listed = set(pages(config["nav"]))
    assert listed == {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}, "every page in the nav"
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert all(f"bench.api.{name}" in api for name in ("run", "leaderboard", "check", "reproduce", "perf"))
    assert "python -m bench check" in (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()


def test_a_broken_link_fails_the_strict_build(tmp_path):
    pytest.importorskip("mkdocs")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# Home\n\nSee [the missing page](missing.md).\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump({"site_name": "t", "validation": config["validation"]}))
    done = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "missing.md" in done.stderr


def test_the_docs_environment_pins_what_the_docs_extra_pins():
    import configparser
    import tomllib

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    pinned = set(tox["testenv:docs"]["deps"].split())
    extra = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"])
    assert pinned == extra
