from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
import torch

from bench.errors import BenchError
from bench.results import leaderboard
from bench.results.figures import DPI, WIDTH_IN, pareto_front
from bench.results.report import MANIFEST, build_report, latex_escape
from bench.run.executors import execute
from bench.run.runner import plan_run

SHORT = ["suite.meta_iterations=10", "suite.val_every=5"]  # the training budget is not part of the protocol


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, list[dict]]:
    """sine (two algorithms, two seeds) and sine-k5 (same protocol but 5 shots and 5 queries)."""
    results_dir = tmp_path_factory.mktemp("results")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny models only slow down with more threads on a busy machine
    try:
        made = execute(plan_run("sine", ["maml", "cnp"], [0, 1], "smoke", results_dir, "cpu", SHORT), progress=False)
        made += execute(plan_run("sine-k5", ["maml", "cnp"], [0], "smoke", results_dir, "cpu", SHORT), progress=False)
    finally:
        torch.set_num_threads(threads)
    return results_dir, made


@pytest.fixture(scope="module")
def built(results, tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("report")
    return out, build_report(results[0], out)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_every_table_gets_its_tables_and_figures(results, built):
    out, written = built
    assert sorted(written) == sorted(set(written)) and all(p.is_file() for p in written)
    for suite in ("sine", "sine-k5"):
        [description] = [d for d, _ in leaderboard.leaderboards(results[0], suite)]
        base = f"{suite}/{description['tier']}-{description['protocol_hash']}"
        for name in ("table.md", "table.tex", "table.csv", *(f"{fig}.{ext}" for fig in ("metric", "pareto", "curves")
                                                              for ext in ("pdf", "png"))):
            assert (out / f"{base}-{name}") in written, f"{base}-{name}"
    assert len(list((out / "shots").glob("sine-smoke-*-shots.pdf"))) == 1
    assert len(list((out / "shots").glob("sine-smoke-*-shots.png"))) == 1
    assert (out / "average-rank-smoke.csv") in written
    assert out / "index.html" in written


def test_figures_are_complete_pdfs_and_pngs_one_column_wide(built):
    out, written = built
    pdfs = [p for p in written if p.suffix == ".pdf"]
    pngs = [p for p in written if p.suffix == ".png"]
    assert len(pdfs) == len(pngs) == 7
    for pdf in pdfs:
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF") and data.rstrip().endswith(b"%%EOF")
    for png in pngs:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width = matplotlib.image.imread(png).shape[:2]
        assert width == round(WIDTH_IN * DPI) and 300 < height < 6 * DPI


def test_latex_and_csv_tables(results, built):
    results_dir, made = results
    out, _ = built
    [(description, table)] = leaderboard.leaderboards(results_dir, "sine")
    base = out / "sine" / f"{description['tier']}-{description['protocol_hash']}"
    tex = Path(f"{base}-table.tex").read_text()
    assert all(rule in tex for rule in (r"\toprule", r"\midrule", r"\bottomrule"))
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert sorted(row.split(" & ")[1] for row in body) == ["cnp", "maml"]
    assert r"$\pm$" in tex and "±" not in tex
    csv = pd.read_csv(f"{base}-table.csv").set_index("algorithm")
    assert set(leaderboard.COLUMNS) - {"algorithm"} <= set(csv.columns)
    for algorithm in ("maml", "cnp"):
        means = [r["metric"]["mean"] for r in made if r["suite"]["name"] == "sine" and r["algorithm"]["name"] == algorithm]
        assert len(means) == 2 and csv.loc[algorithm, "mean"] == pytest.approx(sum(means) / 2, rel=1e-12)
    markdown = Path(f"{base}-table.md").read_text()
    assert "| rank | algorithm | MSE |" in markdown and markdown.count("\n| ") == 3


def test_the_index_links_every_file(built):
    out, written = built
    page = (out / "index.html").read_text()
    links = set(re.findall(r'(?:href|src)="([^"#]+)"', page))
    assert {p.relative_to(out).as_posix() for p in written if p.name != "index.html"} == links
    assert "python -m bench report" in page and "<script" not in page


def test_rebuilding_gives_the_same_bytes_and_removes_only_our_stale_files(results, built):
    out, _ = built
    before = snapshot(out)
    (out / "notes.txt").write_text("mine")
    (out / "sine" / "old-table.md").write_text("from an earlier build")
    (out / MANIFEST).write_text((out / MANIFEST).read_text() + "sine/old-table.md\n")
    build_report(results[0], out)
    after = snapshot(out)
    assert after.pop("notes.txt") == b"mine"
    assert after == before


def test_a_subset_of_suites(results, tmp_path):
    written = build_report(results[0], tmp_path, ["sine-k5"])
    assert not (tmp_path / "sine").exists()
    assert not (tmp_path / "shots").exists()  # one shot value: nothing to plot
    assert sum(p.suffix == ".png" for p in written) == 3


def test_a_suite_file_path_names_its_suite_as_in_run_and_leaderboard(results, tmp_path, cli):
    from tests.conftest import ROOT

    code, out, err = cli("report", str(ROOT / "suites" / "sine-k5.yaml"), "--results-dir", str(results[0]),
                         "--out", str(tmp_path))
    assert code == 0, err
    assert (tmp_path / "sine-k5").is_dir() and not (tmp_path / "sine").exists()


def test_an_unreadable_record_stops_the_report(tmp_path):
    (tmp_path / "results" / "sine" / "smoke").mkdir(parents=True)
    (tmp_path / "results" / "sine" / "smoke" / "broken.json").write_text("{")
    with pytest.raises(BenchError, match="not a readable bench record"):
        build_report(tmp_path / "results", tmp_path / "report")


def test_pareto_front_and_latex_escaping():
    assert pareto_front([1, 2, 3], [3, 2, 1]) == [True, True, True]
    assert pareto_front([1, 2, 2], [1, 2, 1]) == [False, True, False]
    assert latex_escape("maml_l2l 5% +- 0.2, -1.5, Conv-4") == r"maml\_l2l 5\% $\pm$ 0.2, $-$1.5, Conv-4"
