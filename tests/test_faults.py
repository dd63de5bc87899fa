"""Property-based tests (hypothesis) of damage: a file system that fails at any write, and any
flipped byte in a checkpoint or a data cache.

The promises: a failed write is one line (exit 1) or a warning, never a traceback; nothing stored
is lost or half-written; a finished result is written, or kept elsewhere and named; after the
fault, ``--resume`` finishes the grid; a damaged checkpoint or cache is never trusted. Examples are
derandomized (the same on every machine), and BENCH_FUZZ_SCALE multiplies their number.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import given
from hypothesis import strategies as st

from bench import records
from bench.cli import main
from bench.datasets.base import cached_tensor
from bench.run.checkpoints import load_checkpoint, save_checkpoint
from tests.conftest import ROOT
from tests.test_fuzz import fuzz

ERRORS = [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO, errno.EDQUOT, errno.ENAMETOOLONG]
STORED = sorted((ROOT / "results" / "sine" / "smoke").glob("cnp-*.json"))[0]
TINY = ["--algorithms", "cnp,fomaml", "--seeds", "0", "--checkpoint-every", "2", "--task-chunk", "2",
        *("--set", "suite.meta_iterations=4", "--set", "suite.val_every=2", "--set", "suite.val_tasks=10",
          "--set", "suite.test_tasks=20")]


class FaultyDisk:
    """A test double of a file system under ``root`` whose ``fail_at``-th write operation (creating
    or opening a file for writing, making a directory, syncing a file, renaming into place) fails
    with ``error``, as a full, read-only, quota-limited or failing disk does. ``fail_at=None`` counts
    the operations of a clean run."""

    def __init__(self, root: Path, fail_at: int | None, error: int) -> None:
        self.root, self.fail_at, self.error = str(root), fail_at, error
        self.count, self.failed, self.fds = 0, None, set()

    def _operation(self, what: str, path: str) -> None:
        index, self.count = self.count, self.count + 1
        if index == self.fail_at:
            self.failed = f"{what} {path}"
            raise OSError(self.error, os.strerror(self.error), path)

    def install(self, monkeypatch) -> None:
        real_open, real_mkdir, real_fsync, real_replace = os.open, os.mkdir, os.fsync, os.replace
        writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT

        def ours(path) -> bool:
            return isinstance(path, (str, bytes, os.PathLike)) and os.fsdecode(path).startswith(self.root)

        def fake_open(path, flags, mode=0o777, *, dir_fd=None):
            if ours(path) and flags & writing:
                self._operation("open", os.fsdecode(path))
            fd = real_open(path, flags, mode, dir_fd=dir_fd)
            (self.fds.add if ours(path) else self.fds.discard)(fd)
            return fd

        def fake_mkdir(path, mode=0o777, *, dir_fd=None):
            if ours(path):
                self._operation("mkdir", os.fsdecode(path))
            return real_mkdir(path, mode, dir_fd=dir_fd)

        def fake_fsync(fd):
            if (fd if isinstance(fd, int) else fd.fileno()) in self.fds:
                self._operation("fsync", str(fd))
            return real_fsync(fd)

        def fake_replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
            if ours(dst):
                self._operation("rename", os.fsdecode(dst))
            return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

        for name, fake in (("open", fake_open), ("mkdir", fake_mkdir), ("fsync", fake_fsync), ("replace", fake_replace)):
            monkeypatch.setattr(os, name, fake)


def _run(capsys, results: Path, *extra: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["-q", "run", "sine", "--tier", "smoke", "--results-dir", str(results), *TINY, *extra])
    return code, capsys.readouterr().err


def _stored(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(results).parts))


def _prepared(root: Path) -> tuple[Path, Path]:
    """A results directory under ``root`` that already holds a record (of another tier), and that record."""
    stored = root / "results" / "sine" / "older" / STORED.name
    stored.parent.mkdir(parents=True)
    shutil.copy(STORED, stored)
    return root / "results", stored


def test_a_write_failing_anywhere_loses_nothing_and_resume_finishes_the_grid(capsys, tmp_path, monkeypatch):
    results, _ = _prepared(tmp_path / "clean")
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "clean" / "cache"))
    counter = FaultyDisk(tmp_path / "clean", None, errno.ENOSPC)
    with monkeypatch.context() as patched:
        counter.install(patched)
        code, err = _run(capsys, results)
    assert code == 0, err
    operations = counter.count
    assert operations > 20, "the double sees the run's writes"

    @fuzz(40)
    @given(fail_at=st.integers(0, operations - 1), error=st.sampled_from(ERRORS))
    def case(fail_at: int, error: int) -> None:
        root = Path(tempfile.mkdtemp(dir=tmp_path))
        results, stored = _prepared(root)
        before = stored.read_bytes()
        monkeypatch.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        disk, finished = FaultyDisk(root, fail_at, error), []
        write_finished = records.write_finished_record

        def noting(path, record, fallbacks):
            if record["status"] == "completed":
                finished.append(record["run_id"])
            return write_finished(path, record, fallbacks)

        with monkeypatch.context() as patched:
            disk.install(patched)
            patched.setattr(records, "write_finished_record", noting)
            code, err = _run(capsys, results)
        where = f"failed: {disk.failed} ({errno.errorcode[error]}); exit {code}; stderr:\n{err}"
        assert disk.failed is not None, where
        assert "Traceback" not in err, where
        if code == 2:  # the writability probe, before any work
            assert finished == [] and "is not writable" in err and len(err.splitlines()) == 1, where
        else:
            assert code in (0, 1), where
        if code != 0:
            assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1, where
        assert stored.read_bytes() == before, where
        assert not list(root.rglob("*.tmp")), where
        for path in _stored(results):
            records.load_record(path)  # never half-written
        completed = {json.loads(p.read_text())["run_id"] for p in _stored(results)
                     if json.loads(p.read_text())["status"] == "completed"}
        for run_id in finished:  # each finished result: stored, kept elsewhere and named, or printed
            if run_id in completed:
                continue
            named = [Path(p) for p in re.findall(r"kept in (\S+):", err)]
            assert any(run_id in p.read_text() for p in named if p.is_file()) or f'"run_id": "{run_id}"' in err, where
        outcomes.add("kept" if "kept in" in err or "its JSON follows" in err else disk.failed.split()[0] + f" {code}")
        code, err = _run(capsys, results, "--resume")  # the disk is well again
        assert code == 0, err
        assert {json.loads(p.read_text())["algorithm"]["name"] for p in _stored(results / "sine" / "smoke")
                if json.loads(p.read_text())["status"] == "completed"} == {"cnp", "fomaml"}
        shutil.rmtree(root)

    outcomes: set[str] = set()
    case()
    assert "kept" in outcomes, f"no example failed the final record's write: {sorted(outcomes)}"


def test_any_flipped_byte_of_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "run.pt"
    state = {"iteration": 6, "weights": torch.linspace(-1, 1, 64), "curve": [{"iteration": 3, "val_metric": 0.5}]}
    save_checkpoint(path, state)
    original = path.read_bytes()

    @fuzz(200)
    @given(position=st.integers(0, len(original) - 1), mask=st.integers(1, 255), truncate=st.booleans())
    def case(position: int, mask: int, truncate: bool) -> None:
        damaged = bytearray(original)
        damaged[position] ^= mask
        path.write_bytes(bytes(damaged[:position] if truncate else damaged))
        assert load_checkpoint(path) is None

    case()
    path.write_bytes(original)
    assert torch.equal(load_checkpoint(path)["weights"], state["weights"])


def test_any_flipped_byte_of_a_data_cache_or_its_hash_rebuilds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    value = torch.arange(300, dtype=torch.int64).reshape(3, 100)
    builds = []

    def build():
        builds.append(1)
        return value.clone()

    cached_tensor("fuzz", "k" * 20, build)
    [cache] = tmp_path.glob("fuzz-*.pt")
    digest = cache.with_name(cache.name + ".sha256")
    originals = {cache: cache.read_bytes(), digest: digest.read_bytes()}

    @fuzz(100)
    @given(which=st.sampled_from([cache, digest]), data=st.data(), mask=st.integers(1, 255))
    def case(which: Path, data, mask: int) -> None:
        for path, content in originals.items():
            path.write_bytes(content)
        damaged = bytearray(originals[which])
        damaged[data.draw(st.integers(0, len(damaged) - 1))] ^= mask
        which.write_bytes(bytes(damaged))
        before = len(builds)
        assert torch.equal(cached_tensor("fuzz", "k" * 20, build), value)
        if bytes(damaged).strip() != originals[which].strip():  # a flipped trailing newline changes nothing read
            assert len(builds) == before + 1, "a damaged cache is rebuilt, never read"

    case()
