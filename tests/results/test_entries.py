"""Which records make one leaderboard row: one configuration, the newest record of each seed, whole.

Each of these failed before bench.results.entries existed (rows were keyed by algorithm and seed only, and
``groupby(...).last()`` took the last non-null value of each column separately)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from bench import records
from bench.formatting import relative_path
from bench.results import check, entries
from bench.results.leaderboard import leaderboards, render
from bench.results.report import build_report
from bench.run.executors import execute
from bench.run.runner import plan_run


def run(results, algorithms, seeds=(0,), overrides=()):
    plan = plan_run("sine", list(algorithms), list(seeds), "smoke", results, "cpu", list(overrides))
    return execute(plan, progress=False)


def store_copy(record: dict, **changes) -> dict:
    """A later record of the same run with some fields changed, filed beside the original."""
    other = copy.deepcopy({k: v for k, v in record.items() if k != "_path"})
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        target = other
        for key in parents:
            target = target[key]
        target[last] = value
    other["run_id"] = record["run_id"][:-8] + "ffffffff"
    other["started_at"] = "2099-01-01T00:00:00+00:00"
    path = Path(record["_path"]).with_name(f"{other['algorithm']['name']}-seed0-{other['run_id']}.json")
    records.write_record(path, other)
    return other


@pytest.fixture(scope="module")
def default_runs(tmp_path_factory):
    """maml and cnp at the smoke tier's defaults (seeds 0 and 1), in a directory the tests copy."""
    results = tmp_path_factory.mktemp("default")
    return results, run(results, ["maml", "cnp"], seeds=(0, 1))


@pytest.fixture
def results(default_runs, tmp_path):
    source, _ = default_runs
    target = tmp_path / "results"
    for path in source.rglob("*.json"):
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


def rows(results, tier="smoke"):
    return {d["budget"]["meta_iterations"]: {row["algorithm"]: row for row in json.loads(render([(d, t)], "json"))}
            for d, t in leaderboards(results, "sine", tier)}


def test_an_overridden_hyperparameter_is_its_own_labelled_row_and_the_default_row_is_unchanged(results, default_runs):
    before = rows(results)
    [overridden] = run(results, ["maml"], overrides=["maml.inner_lr=0.05"])
    after = rows(results)
    assert list(after) == list(before) == [40]
    assert set(after[40]) == {"maml", "cnp", "maml [inner_lr=0.05]"}
    for name in ("maml", "cnp"):
        assert {k: v for k, v in after[40][name].items() if k not in ("rank", "tie_group")} == \
            {k: v for k, v in before[40][name].items() if k not in ("rank", "tie_group")}
    variant = after[40]["maml [inner_lr=0.05]"]
    assert variant["mean"] == overridden["metric"]["mean"] and variant["seeds"] == [0]
    assert variant["registered_algorithm"] == "maml" and variant["variant"] == "inner_lr=0.05"
    assert after[40]["maml"]["published"] == "" and variant["published"] == ""  # no published number at 10 test steps


def test_a_shorter_budget_makes_its_own_table_that_says_so(results):
    before = rows(results)
    run(results, ["maml"], overrides=["suite.meta_iterations=10"])
    boards = leaderboards(results, "sine", "smoke")
    assert len(boards) == 2
    assert rows(results)[40] == before[40]
    [short] = [d for d, _ in boards if d["budget"]["meta_iterations"] == 10]
    assert short["budget_changes"] == {"meta_iterations": [10, 40]}
    assert "budget not the tier's: meta_iterations 10 (tier: 40)" in render(boards, "markdown")


def test_the_newest_record_of_a_seed_counts_whole(results, default_runs):
    """A newer record of the same run whose throughput is null (a run too short to be timed)."""
    _, made = default_runs
    seed0 = next(r for r in made if r["algorithm"]["name"] == "maml" and r["seeds"]["training_seed"] == 0)
    seed1 = next(r for r in made if r["algorithm"]["name"] == "maml" and r["seeds"]["training_seed"] == 1)
    seed0 = {**seed0, "_path": str(results / Path(seed0["_path"]).relative_to(default_runs[0]))}
    shifted = [v + 1.0 for v in seed0["metric"]["per_task"]]
    store_copy(seed0, **{"timing.meta_train_tasks_per_s": None, "timing.test_tasks_per_s": None,
                         "metric.per_task": shifted, "metric.mean": seed0["metric"]["mean"] + 1.0})
    [(description, table)] = leaderboards(results, "sine", "smoke")
    row = table.set_index("algorithm").loc["maml"]
    assert row["mean"] == (seed0["metric"]["mean"] + 1.0 + seed1["metric"]["mean"]) / 2
    # Throughput comes from the same records as the mean: seed 0's newest has none, so only seed 1's counts.
    assert row["meta_train_tasks_per_s"] == seed1["timing"]["meta_train_tasks_per_s"]
    assert len(description["entry_records"]["maml"]) == 2
    [table_entries] = entries.select(records.load_records(results, "sine"))
    [maml] = [e for e in table_entries.entries if e.label == "maml"]
    assert maml.records[0]["metric"]["per_task"] == shifted  # the paired test sees the newest record's episodes


def test_records_of_another_code_version_are_not_averaged_in(results, default_runs):
    _, made = default_runs
    seed0 = next(r for r in made if r["algorithm"]["name"] == "cnp" and r["seeds"]["training_seed"] == 0)
    seed0 = {**seed0, "_path": str(results / Path(seed0["_path"]).relative_to(default_runs[0]))}
    store_copy(seed0, **{"algorithm.code_version": "0123456789abcdef", "metric.mean": 123.0})
    table = rows(results)[40]
    old = f"cnp [older code {seed0['algorithm']['code_version'][:8]}]"
    assert set(table) == {"maml", "cnp", old}
    assert table["cnp"]["seeds"] == [0] and table["cnp"]["mean"] == 123.0
    assert table[old]["seeds"] == [0, 1]


def test_check_and_report_count_the_records_the_leaderboard_counts(results, tmp_path):
    run(results, ["maml"], overrides=["maml.inner_lr=0.05"])
    [(description, table)] = leaderboards(results, "sine", "smoke")
    baseline = check.entries_from_records(results, "sine", "smoke")
    assert sorted(baseline) == ["cnp", "maml"]
    assert baseline["maml"].records == [relative_path(Path(p), Path.cwd()) for p in description["entry_records"]["maml"]]
    assert baseline["maml"].mean == table.set_index("algorithm").loc["maml", "mean"]
    build_report(results, tmp_path / "report", ["sine"])
    csv = (tmp_path / "report" / "sine" / f"smoke-{description['protocol_hash']}-table.csv").read_text()
    assert "maml [inner_lr=0.05]" in csv


def test_check_refuses_a_directory_with_two_configurations_and_no_default(tmp_path):
    run(tmp_path, ["maml"], overrides=["maml.inner_lr=0.05"])
    run(tmp_path, ["maml"], overrides=["maml.inner_lr=0.02"])
    with pytest.raises(Exception, match="several configurations"):
        check.entries_from_records(tmp_path, "sine", "smoke")


def test_labels_without_the_suite_file_name_what_differs_between_entries():
    def record(lr, run_id):
        return {"status": "completed", "run_id": run_id, "started_at": run_id, "seeds": {"training_seed": 0},
                "suite": {"name": "gone", "version": 1, "tier": "smoke", "protocol_hash": "p", "protocol": {},
                          "budget": {"meta_iterations": 5}},
                "algorithm": {"name": "maml", "hyperparameters": {"inner_lr": lr, "inner_steps": 1}, "code_version": "c"}}
    [table] = entries.select([record(0.1, "a"), record(0.2, "b")], defaults_of=lambda suite, tier: None)
    assert [e.label for e in table.entries] == ["maml [inner_lr=0.1]", "maml [inner_lr=0.2]"]
    assert table.budget_changes == {} and len(table.records) == 2
