from __future__ import annotations

import json
import os

import pytest

from bench import records
from bench.errors import BenchError


def minimal(status="running"):
    return {"schema_version": records.SCHEMA_VERSION, "run_id": "r", "status": status, "suite": {}, "algorithm": {},
            "seeds": {}, "environment": {}, "started_at": "t"}


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    path = tmp_path / "a" / "record.json"
    records.write_record(path, minimal())
    assert records.load_record(path)["status"] == "running"

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        records.write_record(path, minimal("completed"))
    assert records.load_record(path)["status"] == "running"  # the old record is untouched
    assert [p.name for p in path.parent.iterdir()] == ["record.json"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[1, 2]", "the top level is not an object"),
        (json.dumps({**minimal(), "schema_version": 99}), "schema_version 99"),
        (json.dumps({k: v for k, v in minimal().items() if k != "seeds"}), "missing seeds"),
        (json.dumps(minimal("completed")), "missing metric"),
        (json.dumps(minimal("exploded")), "unknown status 'exploded'"),
    ],
)
def test_an_unreadable_record_is_a_clear_error(tmp_path, content, why):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(BenchError, match=why) as info:
        records.load_record(path)
    assert "move it out of the results directory or delete it" in str(info.value)


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError, match="is not writable.*--results-dir"):
        records.check_writable(blocker / "results")
