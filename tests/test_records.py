from __future__ import annotations

import json
import os
import re

import pytest

from bench import records
from bench.errors import BenchError


def minimal(status="running"):
    """A record as a run starts it: what identifies the run, no results yet."""
    protocol = {"shots": 10, "queries": 10, "test_tasks": 50, "test_inner_steps": 10}
    return {"schema_version": records.SCHEMA_VERSION, "run_id": "r", "status": status,
            "suite": {"name": "sine", "version": 1, "tier": "smoke", "protocol": protocol, "protocol_hash": "0123456789abcdef"},
            "algorithm": {"name": "maml", "family": "gradient-based", "hyperparameters": {}},
            "seeds": {"training_seed": 0}, "environment": {}, "started_at": "t"}


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


def test_keys_and_statuses_of_newer_runs_are_read(tmp_path):
    path = tmp_path / "record.json"
    records.write_record(path, minimal("diverged") | {"executor": {"kind": "ray"}, "resumed": [{"at_iteration": 3}],
                                                      "diverged": {"iteration": 3}})
    assert records.load_record(path)["resumed"] == [{"at_iteration": 3}]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"seeds": 5}, "field 'seeds': Input should be a valid dictionary"),
        ({"suite": []}, "field 'suite'"),
        ({"schema_version": True}, "schema_version True"),
        ({"algorithm": {"name": "maml", "family": "gradient-based", "hyperparameters": "lr=1"}}, "algorithm.hyperparameters"),
        ({"suite": minimal()["suite"] | {"name": "../elsewhere"}}, "field 'suite.name': String should match pattern"),
        ({"status": ["completed"]}, "unknown status ['completed']"),
    ],
)
def test_a_record_with_wrong_types_is_a_clear_error(tmp_path, change, why):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(minimal() | change))
    with pytest.raises(BenchError, match=re.escape(why)) as info:
        records.load_record(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_unwritable_results_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(BenchError, match="is not writable.*--results-dir"):
        records.check_writable(blocker / "results")


def test_a_record_that_can_be_written_nowhere_is_printed_whole(tmp_path, monkeypatch):
    import errno

    from bench.errors import RecordNotWritten

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(records, "write_atomic", full)
    record = {"status": "completed", "metric": {"mean": 0.5}}
    with pytest.raises(RecordNotWritten) as caught:
        records.write_finished_record(tmp_path / "r.json", record, [tmp_path / "a", tmp_path / "b"])
    message, json_line = str(caught.value).split("\n")
    assert "nor anywhere else" in message and json.loads(json_line) == record


def test_a_read_only_file_system_is_named_before_any_work(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.f_flag = real(path).f_flag | os.ST_RDONLY

    monkeypatch.setattr(os, "statvfs", ReadOnly)  # as a read-only mount reports itself (root ignores mode bits)
    with pytest.raises(BenchError, match=rf"results directory {tmp_path} is not writable \(Read-only file system\)"):
        records.check_writable(tmp_path, subdirs=("sine/smoke",), create=False)
    assert not (tmp_path / "sine").exists()


def test_records_pair_on_their_drawn_episodes_unless_what_they_read_differs():
    def run(drawn, read=None):
        return {"seeds": {"test_episodes": {"sha256": drawn, "contents_sha256": read}}}

    assert records.test_episodes_differ([run("a", "x"), run("a", "x"), run("a")]) is None
    assert "different test episodes" in records.test_episodes_differ([run("a", "x"), run("b", "x")])
    assert "no hash" in records.test_episodes_differ([run(None), run("a")])
    assert "read different contents" in records.test_episodes_differ([run("a", "x"), run("a", "y")])
