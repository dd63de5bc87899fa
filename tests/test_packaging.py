"""The wheel stands on its own: built from the checkout, installed into a fresh virtual environment
away from it, it lists the suites it carries and runs one, with no path into the repository.

Dependencies are the test environment's (a ``.pth`` line puts its site-packages after the new
environment's own), so what is tested is the wheel's content and entry points; its declared
dependencies are checked by ``twine check`` on the metadata."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The python of a fresh virtual environment holding only the wheel."""
    where = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(where / "dist"),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    [wheel] = (where / "dist").glob("metalearn_bench-*.whl")
    venv.create(where / "env", with_pip=False)
    python = where / "env" / "bin" / "python"
    target = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip())
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    (target / "test-env-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def bench(python: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BENCH_CACHE_DIR")}
    return subprocess.run([python, "-m", "bench", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**env, "BENCH_CACHE_DIR": str(cwd / "cache")})


def test_the_installed_wheel_lists_its_suites_and_runs_one(installed, tmp_path):
    where = "import bench, bench.config; print(bench.__file__); print(bench.config.SUITES_DIR)"
    located = subprocess.run([installed, "-c", where], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.split()
    assert all(not Path(p).is_relative_to(ROOT) for p in located), located  # the wheel's bench, not the checkout's
    listing = bench(installed, tmp_path, "list", "--format", "json")
    assert listing.returncode == 0, listing.stderr
    suites = {s["name"] for s in json.loads(listing.stdout)["suites"]}
    assert {p.stem for p in (ROOT / "suites").glob("*.yaml")} <= suites
    run = bench(installed, tmp_path, "-q", "run", "sine", "--tier", "smoke", "--algorithms", "maml", "--seeds", "0",
                "--results-dir", str(tmp_path / "results"))
    assert run.returncode == 0, run.stderr[-2000:]
    [record] = (tmp_path / "results" / "sine" / "smoke").glob("maml-seed0-*.json")
    stored = json.loads(record.read_text())
    assert stored["status"] == "completed" and stored["suite"]["file"] == "suites/sine.yaml"
    assert stored["environment"]["packages"]["bench"] == "0.1.0"
