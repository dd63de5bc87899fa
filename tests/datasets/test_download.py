from __future__ import annotations

import hashlib

import pytest

from bench.datasets import DATA_MODULES, download
from bench.errors import BenchError


@pytest.fixture
def served(tmp_path, monkeypatch):
    """An archive served from a file:// URL in place of the official one."""
    payload = b"archive bytes" * 1000
    source = tmp_path / "served.zip"
    source.write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()

    def use(checksum: str) -> None:
        monkeypatch.setattr("bench.datasets.omniglot.DOWNLOADS", {"omniglot/a.zip": (source.as_uri(), checksum)})

    return use, payload, md5


def test_official_sources_are_declared_with_checksums():
    downloadable = [d for d in DATA_MODULES if d not in download.NOT_DOWNLOADABLE]
    assert downloadable
    for dataset in downloadable:
        entries = download.downloads(dataset)
        for url, checksum in entries.values():
            assert url.startswith(("https://", "http://")) and checksum.split(":")[0] in {"md5", "sha256"}


def test_download_verifies_and_renames(served, tmp_path):
    use, payload, md5 = served
    use(f"md5:{md5}")
    [path] = download.download("omniglot", tmp_path / "data")
    assert path.read_bytes() == payload and sorted(p.name for p in path.parent.iterdir()) == ["a.zip"]


def test_a_wrong_checksum_keeps_nothing(served, tmp_path):
    use, _, _ = served
    use("md5:" + "0" * 32)
    with pytest.raises(BenchError, match="does not match its checksum"):
        download.download("omniglot", tmp_path / "data")
    assert list((tmp_path / "data" / "omniglot").iterdir()) == []


def test_unknown_and_undownloadable_datasets():
    with pytest.raises(BenchError, match="did you mean 'omniglot'"):
        download.downloads("omniglott")
    with pytest.raises(BenchError, match="no official download"):
        download.downloads("mini-imagenet")


def test_a_file_inside_a_zip_is_extracted_and_its_own_checksum_checked(tmp_path, monkeypatch):
    import zipfile

    source = tmp_path / "data.zip"
    with zipfile.ZipFile(source, "w") as archive:
        archive.writestr("data/huffpost.json", b'{"raw": "a", "label": 0}\n')
        archive.writestr("data/reuters.json", b'{"raw": "b", "label": 1}\n')
    digest = {m: hashlib.sha256(zipfile.ZipFile(source).read(f"data/{m}")).hexdigest() for m in ("huffpost.json", "reuters.json")}
    monkeypatch.setattr("bench.datasets.text.DOWNLOADS", {
        f"text/{m.split('.')[0]}/{m}": (f"{source.as_uri()}#data/{m}", f"sha256:{digest[m]}") for m in digest})
    paths = download.download("text", tmp_path / "out")
    assert [p.read_bytes() for p in paths] == [b'{"raw": "a", "label": 0}\n', b'{"raw": "b", "label": 1}\n']
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["text"]  # the fetched zip is gone
    monkeypatch.setattr("bench.datasets.text.DOWNLOADS", {"text/x.json": (f"{source.as_uri()}#data/missing.json", "sha256:0")})
    with pytest.raises(BenchError, match="download failed"):
        download.download("text", tmp_path / "out2")
