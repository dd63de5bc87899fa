"""``run --save-model``: each run's selected weights, content-addressed beside the records."""

from __future__ import annotations

import hashlib

import pytest

from bench.errors import BenchError
from bench.run.runner import state_sha256
from bench.run.saved_models import load_saved_model
from tests.conftest import read_records


def test_saved_models_are_the_selected_weights_named_by_their_hash(cli, tmp_path):
    results = tmp_path / "results"
    args = ["run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--seeds", "0,1", "--results-dir", str(results)]
    assert cli(*args, "--save-model")[0] == 0
    stored = read_records(results)
    assert len(stored) == 4 and len(list((results / "models").glob("*.pt"))) == 4
    for record in stored:
        saved = record["saved_model"]
        path = results / saved["path"]
        assert path.name == f"{saved['sha256']}.pt" and hashlib.sha256(path.read_bytes()).hexdigest() == saved["sha256"]
        assert saved["bytes"] == path.stat().st_size and saved["in_shape"] == [1] and saved["out_features"] == 1
        # The file holds the state the record says was selected, bit for bit.
        assert state_sha256(load_saved_model(record, results)) == record["training"]["state_sha256"]
    # A rerun selects the same weights: the same files, nothing added or rewritten.
    before = [p.name for p in (results / "models").glob("*.pt")]
    assert cli(*args[:-1], str(tmp_path / "again"), "--save-model")[0] == 0
    again = sorted(r["saved_model"]["sha256"] for r in read_records(tmp_path / "again"))
    assert again == sorted(p.removesuffix(".pt") for p in before)
    # Off by default; a changed file is refused.
    assert cli(*args[:-1], str(tmp_path / "plain"))[0] == 0
    assert not (tmp_path / "plain" / "models").exists() and "saved_model" not in read_records(tmp_path / "plain")[0]
    record = stored[0]
    path = results / record["saved_model"]["path"]
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(BenchError, match="its SHA-256 is not the one its record names"):
        load_saved_model(record, results)
    with pytest.raises(BenchError, match="has no saved model; run it again with --save-model"):
        load_saved_model(read_records(tmp_path / "plain")[0], tmp_path / "plain")
