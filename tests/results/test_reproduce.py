"""``bench reproduce``: rerun exactly what a record says and compare it episode by episode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import records
from bench.run.environment import environment
from tests.conftest import ROOT, read_records, snapshot


def one_record(directory: Path) -> Path:
    [path] = sorted(directory.rglob("*.json"))
    return path


def test_a_fresh_record_reproduces_bit_for_bit(cli, tmp_path):
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "maml", "--results-dir", str(tmp_path / "a"))[0] == 0
    path = one_record(tmp_path / "a")
    code, out, err = cli("reproduce", str(path), "--results-dir", str(tmp_path / "b"), "--json", str(tmp_path / "s.json"))
    assert code == 0, err
    assert "bit-identical" in out and "all reruns bit-identical" in out
    [row] = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert row["identical"] and row["max_abs_difference"] == 0.0 and row["setup_differences"] == {}
    [rerun] = read_records(tmp_path / "b")
    assert rerun["execution"]["task_chunk_choice"] == "set"  # the record's chunk, not a new measurement
    assert rerun["execution"]["eval_chunk_choice"] == "set"  # and its evaluation chunk
    assert rerun["execution"]["eval_chunk"] == json.loads(path.read_text())["execution"]["eval_chunk"]


def test_a_record_from_before_the_evaluation_chunk_is_evaluated_with_its_task_chunk(cli, tmp_path):
    """Such runs adapted their test episodes task_chunk at a time; the rerun must too, to be bit-identical."""
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "fomaml", "--task-chunk", "4", "--eval-chunk", "4",
               "--results-dir", str(tmp_path / "a"))[0] == 0
    path = one_record(tmp_path / "a")
    record = json.loads(path.read_text())
    for key in [k for k in record["execution"] if k.startswith("eval_chunk")]:
        del record["execution"][key]
    path.write_text(json.dumps(record))
    code, out, err = cli("reproduce", str(path), "--results-dir", str(tmp_path / "b"))
    assert code == 0 and "all reruns bit-identical" in out, out + err
    assert read_records(tmp_path / "b")[0]["execution"]["eval_chunk"] == 4


def test_overrides_budget_and_hyperparameters_are_rerun_as_recorded(cli, tmp_path):
    args = ["run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--set", "maml.inner_lr=0.02",
            "--set", "suite.meta_iterations=12", "--set", "suite.val_every=6", "--threads", "1"]
    assert cli(*args, "--results-dir", str(tmp_path / "a"))[0] == 0
    paths = sorted((tmp_path / "a").rglob("*.json"))
    code, out, err = cli("reproduce", *map(str, paths), "--results-dir", str(tmp_path / "b"))
    assert code == 0, err
    reruns = {r["algorithm"]["name"]: r for r in read_records(tmp_path / "b")}
    assert reruns["maml"]["algorithm"]["hyperparameters"]["inner_lr"] == 0.02
    assert reruns["cnp"]["suite"]["budget"]["meta_iterations"] == 12
    assert reruns["cnp"]["environment"]["torch_threads"] == 1


def test_a_changed_result_is_reported_with_its_difference(cli, tmp_path):
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--results-dir", str(tmp_path / "a"))[0] == 0
    path = one_record(tmp_path / "a")
    record = json.loads(path.read_text())
    record["metric"]["per_task"][3] += 0.25
    record["algorithm"]["code_version"] = "0" * 16
    records.write_record(path, record)
    code, out, _ = cli("reproduce", str(path), "--results-dir", str(tmp_path / "b"))
    assert code == 1
    assert "differ in 1 of 50" in out and "0.25" in out and "algorithm code version: 0000000000000000 ->" in out


def test_records_that_cannot_be_rerun_are_refused_before_any_run(cli, tmp_path):
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--results-dir", str(tmp_path / "a"))[0] == 0
    path = one_record(tmp_path / "a")
    record = json.loads(path.read_text())
    other = tmp_path / "other.json"
    records.write_record(other, {**record, "suite": {**record["suite"], "protocol_hash": "0123456789abcdef"}})
    failed = tmp_path / "failed.json"
    records.write_record(failed, {**{k: v for k, v in record.items() if k not in ("metric",)}, "status": "failed"})
    before = snapshot(tmp_path)
    for bad, says in ((other, "cannot be rerun as recorded"), (failed, "a failed record has no results"),
                      (tmp_path / "missing.json", "not a readable bench record")):
        code, out, err = cli("reproduce", str(path), str(bad), "--results-dir", str(tmp_path / "b"))
        assert code == 2 and says in err and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before  # nothing written: no record under b/, nothing changed


# Committed records behind README tables and CI baselines: on their own machine class (CPU model,
# torch build, thread count) and code they must come back bit for bit. Each is quick to rerun.
COMMITTED = [
    "results/sine/standard/maml-seed0-*.json",  # the README's table
    "results/sine/ci/metasgd-seed0-*.json",  # CI's baselines
    "results/sine/smoke/reptile-seed0-*.json",
    "results/omniglot-5w1s/smoke/protonet-seed0-*.json",
    "results/banking77-5w1s/smoke/maml-seed0-*.json",
]


def _committed(pattern: str) -> Path:
    """The newest record of the pattern (run ids begin with their UTC time): a rewritten baseline's."""
    found = sorted(ROOT.glob(pattern))
    assert found, f"no committed record matches {pattern}"
    return found[-1]


@pytest.mark.parametrize("pattern", COMMITTED)
def test_committed_records_reproduce_bit_for_bit_on_their_machine_class(pattern, cli, tmp_path):
    import torch

    path = _committed(pattern)
    record = json.loads(path.read_text())
    here, there = environment(torch.device("cpu")), record["environment"]
    cpu = (here["cpu_identity"]["capability"], here["cpu_identity"]["id"])
    recorded = ((there.get("cpu_identity") or {}).get("capability"), (there.get("cpu_identity") or {}).get("id"))
    if (recorded, there["torch"]) != (cpu, here["torch"]):
        pytest.skip(f"recorded on CPU {recorded} with torch {there['torch']}; this machine is {cpu} with torch {here['torch']}")
    if record["suite"]["protocol"]["task_type"] == "classification":
        from bench.config import load_suite
        from bench.datasets import check_available
        from bench.errors import BenchError

        try:
            check_available(load_suite(record["suite"]["name"], tier=record["suite"]["tier"]))
        except BenchError as exc:
            pytest.skip(str(exc))
    code, out, err = cli("reproduce", str(path), "--results-dir", str(tmp_path), "--json", str(tmp_path / "s.json"))
    [row] = json.loads((tmp_path / "s.json").read_text())["rows"]
    assert code == 0 and row["identical"], out + err


def test_summaries_show_record_paths_as_the_project_names_them_wherever_the_checkout_was():
    from bench.results.reproduce import shown_path

    assert shown_path(str(ROOT / "results" / "sine" / "standard" / "a.json")) == "results/sine/standard/a.json"
    assert shown_path("/some/other/checkout/results/sine/standard/a.json") == "results/sine/standard/a.json"
    assert shown_path("/tmp/scratch/a.json") == "/tmp/scratch/a.json"
