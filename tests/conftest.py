from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent
# Whether the Omniglot archives are in BENCH_DATA_DIR (the tests that read them skip otherwise).
HAS_OMNIGLOT = (Path(os.environ.get("BENCH_DATA_DIR", "")) / "omniglot" / "images_background.zip").is_file()


@pytest.fixture
def cli(capsys):
    """Run ``python -m bench ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["-q", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def tiny_suite(tmp_path) -> Path:
    """A sine suite small enough to train every algorithm in about a second."""
    path = tmp_path / "suites" / "tiny.yaml"
    path.parent.mkdir()
    path.write_text((ROOT / "suites" / "sine.yaml").read_text().replace("name: sine", "name: tiny"))
    return path


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes, to show that nothing changed."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def read_records(directory: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(directory.rglob("*.json"))]


def pytest_configure(config) -> None:
    # Under pytest-xdist each worker gets one of the machine's cores: torch threads in several
    # workers would contend for the same cores (and spin-wait), slowing every test.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
        os.environ["OMP_NUM_THREADS"] = "1"
