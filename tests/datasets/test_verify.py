"""Data files are checked against their official checksums before a run reads them."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pytest

from bench.datasets import verify
from bench.datasets.omniglot import MEMBER_DIGESTS
from bench.errors import BenchError
from bench.run.runner import plan_run

SHARED = Path(os.environ.get("BENCH_DATA_DIR", ""))
needs_reuters = pytest.mark.skipif(not (SHARED / "text" / "reuters" / "reuters.json").is_file(),
                                   reason="BENCH_DATA_DIR has no Reuters")


@needs_reuters
def test_a_text_file_with_changed_bytes_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    copy = tmp_path / "data" / "text" / "reuters" / "reuters.json"
    copy.parent.mkdir(parents=True)
    shutil.copy(SHARED / "text" / "reuters" / "reuters.json", copy)
    plan_run("reuters-5w1s", ["protonet"], [0], "smoke", tmp_path / "ok", "cpu", dry_run=True)  # the official bytes pass
    data = bytearray(copy.read_bytes())
    data[1000:1050] = b"x" * 50
    copy.write_bytes(bytes(data))
    with pytest.raises(BenchError, match=r"reuters\.json does not match its official checksum \(sha256:182faf"):
        plan_run("reuters-5w1s", ["protonet"], [0], "smoke", tmp_path / "r", "cpu")
    assert not (tmp_path / "r").exists()
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")  # the user's own copy, on purpose: taken, and said so
    plan_run("reuters-5w1s", ["protonet"], [0], "smoke", tmp_path / "r", "cpu", dry_run=True)
    assert verify.describe() == "not checked (BENCH_UNVERIFIED_DATA=1)"


def test_a_match_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "f.txt"
    path.write_bytes(b"hello")
    expected = "md5:5d41402abc4b2a76b9719d911017c592"
    verify.verify_official(path, expected, "fetch it again")
    calls = []
    monkeypatch.setattr(verify, "file_digest", lambda *args: calls.append(args) or "")
    verify.verify_official(path, expected, "fetch it again")
    assert calls == []  # size and modification time unchanged: not read again
    path.write_bytes(b"jello")
    with pytest.raises(BenchError, match="does not match its official checksum"):
        verify.verify_official(path, expected, "fetch it again")


def test_a_faithful_re_archive_matches_by_its_member_listing(tmp_path):
    source = SHARED / "omniglot" / "images_background.zip"
    if not source.is_file():
        pytest.skip("BENCH_DATA_DIR has no Omniglot")
    # Our copy's zip bytes are not the official zip's, its members are: the listing digest matches.
    assert verify.member_digest(source) == MEMBER_DIGESTS["omniglot/images_background.zip"]
    other = tmp_path / "x.zip"
    with zipfile.ZipFile(source) as full, zipfile.ZipFile(other, "w") as partial:
        for member in full.namelist()[:50]:
            partial.writestr(member, full.read(member))
    assert verify.member_digest(other) != MEMBER_DIGESTS["omniglot/images_background.zip"]
