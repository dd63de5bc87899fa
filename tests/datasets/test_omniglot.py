"""Omniglot read from the official archives in BENCH_DATA_DIR."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
import torch

from bench.config import load_suite
from bench.datasets import omniglot
from bench.errors import BenchError

SPLITS = Path(os.environ.get("BENCH_DATA_DIR", "")) / "omniglot" / "splits" / "vinyals"
pytestmark = pytest.mark.skipif(not (SPLITS / "train.txt").is_file(), reason="BENCH_DATA_DIR has no Omniglot")


@pytest.fixture(scope="module")
def split_data():
    return omniglot.load_split_images(load_suite("omniglot-5w1s").data)


def test_the_suite_split_is_the_published_vinyals_split(split_data):
    data, splits = split_data
    for split in ("train", "val", "test"):
        published = (SPLITS / f"{split}.txt").read_text().split()
        ours = [data.class_names[i] for i in splits[split]]
        assert sorted(ours) == sorted(published), split
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4112, 688, 1692]


def test_images_are_28x28_with_strokes_one_and_rotations_are_classes(split_data):
    data, _ = split_data
    assert data.images.shape == (4112 + 688 + 1692, 20, 1, 28, 28) and data.images.dtype == torch.uint8
    # Strokes are 1 (255): most pixels are background 0, and the ink is bright.
    assert (data.images == 0).float().mean() > 0.6 and data.images.max() == 255
    index = data.index()
    upright, turned = index["Latin/character01/rot000"], index["Latin/character01/rot090"]
    assert torch.equal(torch.rot90(data.images[upright], 1, dims=(-2, -1)), data.images[turned])


def test_the_cache_is_reused_and_keyed_by_its_inputs(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    config = load_suite("omniglot-5w1s").data
    start = time.perf_counter()
    first = omniglot.load_characters(config)
    decode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    second = omniglot.load_characters(config)
    cached_seconds = time.perf_counter() - start
    assert torch.equal(first.images, second.images) and first.key == second.key
    assert cached_seconds < decode_seconds / 5
    other = omniglot.load_characters(config.model_copy(update={"resize_filter": "bilinear"}))
    assert other.key != first.key and len(list(tmp_path.glob("omniglot-*.pt"))) == 2


def test_missing_and_corrupt_archives_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    config = load_suite("omniglot-5w1s").data
    with pytest.raises(BenchError, match=r"Omniglot data not found: .*images_background.zip.*python -m bench download omniglot"):
        omniglot.load_characters(config)
    (tmp_path / "omniglot").mkdir()
    for name in config.archives:
        (tmp_path / name).write_bytes(b"<html>404</html>")
    with pytest.raises(BenchError, match="does not match its official checksum .*download omniglot --force"):
        omniglot.load_characters(config)
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")
    with pytest.raises(BenchError, match="not a readable zip archive"):
        omniglot.load_characters(config)


def test_an_incomplete_archive_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")  # past the checksum check, to the decoder's own
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "omniglot").mkdir()
    with zipfile.ZipFile(SPLITS.parent.parent / "images_background.zip") as source, \
            zipfile.ZipFile(tmp_path / "omniglot" / "images_background.zip", "w") as partial:
        pngs = [m for m in source.namelist() if m.endswith(".png")]
        for member in pngs[:30]:  # leaves a character with fewer than 20 drawings
            partial.writestr(member, source.read(member))
    config = load_suite("omniglot-5w1s").data.model_copy(update={"archives": ("omniglot/images_background.zip",)})
    with pytest.raises(BenchError, match="expected 20; the archive is incomplete"):
        omniglot.load_characters(config)


def test_a_split_pattern_that_matches_nothing():
    config = load_suite("omniglot-5w1s").data
    characters = ["Latin/character01"]
    with pytest.raises(BenchError, match="'Klingon' matches no character"):
        omniglot.split_classes(config.model_copy(update={"split": {"train": ("Klingon",)}}), characters)


@pytest.mark.parametrize(("settings", "message"), [
    (["suite.shots=10"], "of split 'val' has 20 examples, fewer than shots + queries = 25"),
    (["suite.ways=700"], "split 'val' has 688 classes, fewer than 700 ways"),
])
def test_impossible_ways_or_shots_stop_the_run_before_any_work(tmp_path, capsys, settings, message):
    from bench.cli import main

    args = [f"--set={s}" for s in settings]
    code = main(["-q", "run", "omniglot-5w1s", "--tier", "smoke", "--algorithms", "protonet",
                 "--results-dir", str(tmp_path / "results"), *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: suite 'omniglot-5w1s' cannot make its episodes")
    assert message in err and err.count("\n") == 1
    assert ("--set suite.ways=N" if "ways" in settings[0] else "--set suite.shots=N") in err
    assert not (tmp_path / "results").exists()


def test_an_archive_with_one_flipped_byte_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_UNVERIFIED_DATA", "1")  # past the checksum check, to the decoder's own
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "omniglot").mkdir()
    archive = tmp_path / "omniglot" / "images_background.zip"
    with zipfile.ZipFile(SPLITS.parent.parent / "images_background.zip") as source, \
            zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as copy:
        for member in [m for m in source.namelist() if m.startswith("images_background/Latin/character01/0")]:
            copy.writestr(member, source.read(member))
    data = bytearray(archive.read_bytes())
    central = data.index(b"PK\x01\x02")  # the first drawing's central directory entry
    data[central + 10] = 99  # its compression method: one that does not exist
    archive.write_bytes(bytes(data))
    config = load_suite("omniglot-5w1s").data.model_copy(update={"archives": ("omniglot/images_background.zip",)})
    with pytest.raises(BenchError, match=r"images_background\.zip: member .* cannot be decoded \(.*compression method"
                                         r".*\); download the archive again"):
        omniglot.load_characters(config)


def test_a_damaged_or_edited_cache_is_detected_and_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    config = load_suite("omniglot-5w1s").data
    good = omniglot.load_characters(config)
    [cache_file] = tmp_path.glob("omniglot-*.pt")
    stored = torch.load(cache_file, weights_only=True)
    stored["images"] = 255 - stored["images"]  # a valid tensor file, every pixel inverted
    torch.save(stored, cache_file)
    again = omniglot.load_characters(config)
    assert "does not match the SHA-256 written when it was built" in caplog.text
    assert torch.equal(again.images, good.images) and again.key == good.key
    cache_file.write_bytes(b"not a tensor file")
    assert torch.equal(omniglot.load_characters(config).images, good.images)


def test_any_flipped_byte_in_an_archive_is_a_clear_error_or_harmless(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    root = tmp_path_factory.mktemp("flips")
    archive = root / "omniglot" / "images_background.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(SPLITS.parent.parent / "images_background.zip") as source, \
            zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as copy:
        for member in [m for m in source.namelist() if m.startswith("images_background/Latin/character01/0")]:
            copy.writestr(member, source.read(member))
    original = archive.read_bytes()
    config = load_suite("omniglot-5w1s").data.model_copy(update={"archives": ("omniglot/images_background.zip",)})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("BENCH_DATA_DIR", str(root))
        env.setenv("BENCH_CACHE_DIR", str(root / "cache"))
        env.setenv("BENCH_UNVERIFIED_DATA", "1")  # to the decoder itself: the checksum check would stop most flips
        clean = omniglot.load_characters(config).images
        outcomes = {"error": 0, "same": 0}

        @settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(position=st.integers(0, len(original) - 1), mask=st.integers(1, 255))
        def flip(position, mask):
            data = bytearray(original)
            data[position] ^= mask
            archive.write_bytes(bytes(data))
            for cached in (root / "cache").glob("*"):
                cached.unlink()
            try:
                images = omniglot.load_characters(config).images
            except BenchError as exc:
                assert "\n" not in str(exc)
                outcomes["error"] += 1
            else:  # a byte nothing reads (a timestamp, a comment), or the same pixels decoded
                assert torch.equal(images, clean)
                outcomes["same"] += 1

        flip()
    assert outcomes["error"] > 0
