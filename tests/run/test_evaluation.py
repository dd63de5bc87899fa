"""``bench evaluate``: saved models evaluated under another suite's protocol, and their cross-domain tables."""

from __future__ import annotations

import json
from pathlib import Path

from bench.records import load_record
from tests.conftest import read_records
from tests.datasets.test_image_folder import generated_folder, suite_file


def _runs(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob("*.json") if "evaluations" not in p.parts)


def test_a_model_evaluated_on_its_own_suite_gives_its_test_values_exactly(cli, tmp_path):
    results = tmp_path / "results"
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--results-dir", str(results),
               "--save-model")[0] == 0
    trained = _runs(results)
    code, out, err = cli("evaluate", *map(str, trained), "--suite", "sine", "--tier", "smoke", "--results-dir", str(results))
    assert code == 0, err
    evaluated = sorted((results / "evaluations" / "sine" / "smoke").glob("*.json"))
    assert len(evaluated) == 2 and len(out.splitlines()) == 2
    for path in evaluated:
        record = load_record(path)  # a readable record, checked as run records are
        training = load_record(Path(record["evaluation_of"]["record"]))
        assert record["kind"] == "evaluation" and record["evaluation_of"]["run_id"] == training["run_id"]
        assert record["metric"]["per_task"] == training["metric"]["per_task"]  # bit for bit
        assert record["seeds"]["test_episodes"]["contents_sha256"] == training["seeds"]["test_episodes"]["contents_sha256"]
        assert record["evaluation_of"]["state_sha256"] == training["training"]["state_sha256"]
        assert record["suite"]["protocol"]["trained_on"]["protocol_hash"] == training["suite"]["protocol_hash"]
    # The suite's own table and, apart, the cross-domain one (never averaged with the runs).
    code, out, _ = cli("leaderboard", "sine", "--tier", "smoke", "--results-dir", str(results), "--format", "json")
    rows = json.loads(out)
    assert len(rows) == 4 and sum("trained_on" in row for row in rows) == 2
    assert len({row["protocol_hash"] for row in rows}) == 2
    code, out, _ = cli("leaderboard", "sine", "--tier", "smoke", "--results-dir", str(results))
    assert "cross-domain: models trained on sine v" in out
    assert cli("report", "sine", "--results-dir", str(results), "--out", str(tmp_path / "report"))[0] == 0
    assert "cross-domain: models trained on sine v" in (tmp_path / "report" / "index.html").read_text()
    # An evaluation record is not a training record, nor something `reproduce` reruns.
    code, _, err = cli("evaluate", str(evaluated[0]), "--suite", "sine", "--results-dir", str(results))
    assert code == 2 and "is an evaluation record" in err
    code, _, err = cli("reproduce", str(evaluated[0]))
    assert code == 2 and "is an evaluation record" in err


def test_other_ways_work_where_the_algorithm_allows_and_misfits_are_errors_before_any_work(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    root = generated_folder(tmp_path)
    source = suite_file(tmp_path, root).read_text()
    training = tmp_path / "train.yaml"
    training.write_text(source.replace("meta_iterations: 30", "meta_iterations: 10").replace("val_every: 15", "val_every: 5"))
    two_way = tmp_path / "two-way.yaml"
    two_way.write_text(source.replace("name: my-images", "name: my-images-2way").replace("ways: 3", "ways: 2"))
    bigger = tmp_path / "bigger.yaml"
    bigger.write_text(source.replace("name: my-images", "name: my-images-20px").replace("image_size: 16", "image_size: 20"))
    results = tmp_path / "results"
    assert cli("run", str(training), "--algorithms", "protonet,maml,baseline", "--results-dir", str(results),
               "--save-model")[0] == 0
    protonet, maml, baseline = (next(p for p in _runs(results) if p.name.startswith(f"{name}-"))
                                for name in ("protonet", "maml", "baseline"))
    assert cli("run", str(training), "--algorithms", "protonet", "--results-dir", str(tmp_path / "plain"))[0] == 0
    (unsaved,) = _runs(tmp_path / "plain")

    for records, suite, expected in (
        ([protonet, maml], two_way, "maml's saved weights do not fit suite 'my-images-2way' (trained for 3 outputs, the "
                                    "target has 2)"),
        ([protonet], bigger, "the saved network takes inputs of shape (3, 16, 16), suite 'my-images-20px' gives (3, 20, 20)"),
        ([protonet, unsaved], two_way, "has no saved model: its run did not keep its weights; run it again with --save-model"),
        ([protonet], Path("sine"), "a classification model cannot be evaluated on regression suite 'sine'"),
    ):
        code, _, err = cli("evaluate", *map(str, records), "--suite", str(suite), "--results-dir", str(results))
        assert code == 2 and expected in err, err
        assert not (results / "evaluations").exists()  # nothing evaluated, nothing written

    code, out, err = cli("evaluate", str(protonet), str(baseline), "--suite", str(two_way), "--results-dir", str(results))
    assert code == 0, err
    for record in read_records(results / "evaluations"):
        assert record["suite"]["name"] == "my-images-2way" and record["suite"]["protocol"]["ways"] == 2
        assert record["metric"]["n_episodes"] == 30 and record["metric"]["mean"] > 60, record["metric"]  # chance: 50%
        # Only what no prediction reads is built for two ways: the unused head, the fine-tuning classifier's start.
        rebuilt = {"backbone.head_layer.weight", "backbone.head_layer.bias"}
        if record["algorithm"]["name"] == "baseline":
            rebuilt |= {"finetune_weight", "finetune_bias"}
        assert set(record["evaluation_of"]["rebuilt_for_target"]) == rebuilt
    # On an episode file of the same episodes: the same values, in a table of its own (another protocol hash).
    episodes = tmp_path / "two-way-test.json"
    assert cli("episodes", "export", str(two_way), "--out", str(episodes))[0] == 0
    code, _, err = cli("evaluate", str(protonet), "--suite", str(two_way), "--episodes", str(episodes),
                       "--results-dir", str(tmp_path / "from-file"))
    assert code == 0, err
    (from_file,) = read_records(tmp_path / "from-file")
    (drawn,) = [r for r in read_records(results / "evaluations") if r["algorithm"]["name"] == "protonet"]
    assert from_file["metric"]["per_task"] == drawn["metric"]["per_task"]
    assert from_file["suite"]["protocol"]["test_episodes_sha256"]
    assert from_file["suite"]["protocol_hash"] != drawn["suite"]["protocol_hash"]
