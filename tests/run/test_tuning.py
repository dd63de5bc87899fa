"""bench tune: equal trials and budget per algorithm, scored on validation episodes only, reproducible
and resumable trial by trial; `bench run --tuned` runs the best values as entries of their own."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from bench import api, records
from bench.errors import BenchError
from bench.run.runner import Episodes
from tests.conftest import ROOT

pytest.importorskip("optuna")

BUDGET = ["suite.meta_iterations=6", "suite.val_every=3", "suite.val_tasks=5", "suite.test_tasks=5",
          "suite.warmup_iterations=0"]


def tune(results: Path, trials: int = 3, algorithms: tuple[str, ...] = ("maml", "cnp"), **kwargs):
    return api.tune("sine", list(algorithms), trials, "smoke", 0, results, "cpu", BUDGET, progress=False, **kwargs)


def trial_summaries(summaries):
    return {s["algorithm"]: [(t["values"], t["best_val_metric"]) for t in s["trials_run"]] for s in summaries}


def test_every_algorithm_gets_the_same_trials_scored_on_validation_and_the_best_is_written(tmp_path):
    summaries, tuned_file = tune(tmp_path)
    assert {s["algorithm"]: len(s["trials_run"]) for s in summaries} == {"maml": 3, "cnp": 3}
    assert len({json.dumps(s["budget"], sort_keys=True) for s in summaries}) == 1  # one budget for all
    for summary in summaries:
        # a trial that diverges or never validates to a finite score (an inner rate near 1 on sine) is kept, unscored
        scores = [t["best_val_metric"] for t in summary["trials_run"] if t["best_val_metric"] is not None]
        assert all(t["best_val_metric"] is None for t in summary["trials_run"] if t["status"] == "diverged")
        assert summary["best"]["best_val_metric"] == min(scores)  # sine: lower MSE is better
        study = Path(tmp_path) / "tuning" / "sine" / "smoke" / f"{summary['algorithm']}-{summary['study_sha256'][:12]}"
        trial_records = [records.load_record(p) for trial in sorted(study.glob("trial-*"))
                         for p in records.iter_record_paths(trial)]
        assert len(trial_records) == 3 and {r["status"] for r in trial_records} <= {"completed", "diverged"}
        # a normal record: hyperparameters, validation curve; no test metric
        for record in (r for r in trial_records if r["status"] == "completed"):
            assert "metric" not in record and record["seeds"]["test_episodes"]["sha256"] is None
            assert record["training"]["curve"] and record["tuning_trial"]["study_sha256"] == summary["study_sha256"]
            values = record["tuning_trial"]["values"]
            assert {k: record["algorithm"]["hyperparameters"][k] for k in values} == values
        maml_values = [t["values"] for t in summary["trials_run"]]
        assert len({json.dumps(v, sort_keys=True) for v in maml_values}) == 3  # three different points searched
    tuned = json.loads(tuned_file.read_text())["algorithms"]
    assert tuned["maml"]["hyperparameters"] == summaries[0]["best"]["values"]
    assert tuned["maml"]["provenance"]["trials"] == 3 and tuned["maml"]["provenance"]["pruning"] == "none"
    # The docs' tuning table is generated from the studies (tools/update_readme.py).
    sys.path.insert(0, str(ROOT / "tools"))
    import update_readme

    table = update_readme.tuning_block(Path(tmp_path), "sine", "smoke")
    assert table.count("\n| maml | 3 (") == 1 and table.count("\n| cnp | 3 (") == 1 and "lr=0.001 |" in table
    # Trial records stay out of the leaderboards: no completed run of sine exists.
    with pytest.raises(BenchError, match="no completed records for suite 'sine'"):
        api.leaderboard("sine", tmp_path, "smoke")


def test_tuning_never_evaluates_the_test_episodes(tmp_path, monkeypatch):
    evaluate = Episodes.evaluate

    def poisoned(self, algorithm, split, n_tasks, steps):
        if split == "test":
            raise AssertionError("the test split was evaluated")
        return evaluate(self, algorithm, split, n_tasks, steps)

    monkeypatch.setattr(Episodes, "evaluate", poisoned)
    summaries, _ = tune(tmp_path, trials=2)
    assert all(t["status"] == "completed" for s in summaries for t in s["trials_run"])
    # ... and the poison works: a normal run, which tests, fails on it.
    [record] = api.run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", BUDGET, progress=False)
    assert record["status"] == "failed" and "the test split was evaluated" in record["error"]["message"]


def test_a_study_is_reproducible_and_a_killed_one_resumes_to_the_same_trials(tmp_path):
    first, _ = tune(tmp_path / "a")
    again, _ = tune(tmp_path / "b")
    assert trial_summaries(again) == trial_summaries(first)
    # Kill after trial 0: trial 1 interrupted, trial 2 never started.
    study = next((tmp_path / "b" / "tuning" / "sine" / "smoke").glob("maml-*"))
    shutil.rmtree(study / "trial-002")
    [path] = list(records.iter_record_paths(study / "trial-001"))
    record = json.loads(path.read_text())
    record["status"] = "interrupted"
    path.write_text(json.dumps(record))
    with pytest.raises(BenchError, match="already holds this study's trials; add --resume"):
        tune(tmp_path / "b", algorithms=("maml",))
    resumed, _ = tune(tmp_path / "b", algorithms=("maml",), resume=True)
    assert trial_summaries(resumed)["maml"] == trial_summaries(first)["maml"]


def test_a_tuned_run_says_so_and_is_never_averaged_with_the_default_entry(tmp_path):
    _, tuned_file = tune(tmp_path, trials=1, algorithms=("cnp",))
    tuned = json.loads(tuned_file.read_text())
    tuned["algorithms"]["cnp"]["hyperparameters"] = {"lr": 0.001}  # the default: only the marker tells them apart
    tuned_file.write_text(json.dumps(tuned))
    [default] = api.run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", BUDGET, progress=False)
    [marked] = api.run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", BUDGET, progress=False, use_tuned=True)
    assert "tuned" not in default["algorithm"]
    assert marked["algorithm"]["tuned"]["trials"] == 1 and marked["algorithm"]["hyperparameters"]["lr"] == 0.001
    [(_, frame)] = api.leaderboard("sine", tmp_path, "smoke")
    labels = sorted(frame["algorithm"])
    assert labels[0] == "cnp" and labels[1].startswith("cnp [tuned, 1 trials, study ")


def test_tuned_values_from_another_budget_are_refused(tmp_path):
    tune(tmp_path, trials=1, algorithms=("cnp",))
    with pytest.raises(BenchError, match="was tuned on protocol .* with budget .* not this run's"):
        api.plan("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", [*BUDGET, "suite.meta_iterations=7"], use_tuned=True)
    with pytest.raises(BenchError, match="has no tuned values for maml"):
        api.plan("sine", ["maml"], [0], "smoke", tmp_path, "cpu", BUDGET, use_tuned=True)
    with pytest.raises(BenchError, match=r"--set cnp.\* with --tuned"):
        api.plan("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", [*BUDGET, "cnp.lr=0.01"], use_tuned=True)


@pytest.mark.parametrize(("arguments", "message"), [
    (["sine", "--trials", "0"], "--trials 0: give at least 1 trial per algorithm"),
    (["sine", "--algorithms", "mamll"], "unknown algorithm 'mamll'; did you mean 'maml'"),
    (["sine", "--set", "maml.inner_lr=0.1"], "only suite.FIELD=VALUE"),
    (["sine", "--set", "suite.val_tasks=0"], "suite.val_tasks"),  # every suite validates on at least one episode
    (["banking77-5w1s", "--algorithms", "centroid"], "centroid declares no tunable hyperparameter"),
    (["sine", "--parallel", "2"], "--parallel 2 runs trials side by side on a Ray cluster: add --executor ray"),
])
def test_bad_tuning_input_is_one_line_and_exit_2_before_any_trial(cli, tmp_path, arguments, message):
    code, _, err = cli("tune", *arguments, "--tier", "smoke", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and message in err, err
    assert not (tmp_path / "r" / "tuning").exists()


def test_run_tuned_without_a_study_says_what_to_do(cli, tmp_path):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--tuned", "--results-dir", str(tmp_path))
    assert code == 2 and "no tuned hyperparameters for this suite and tier; run `bench tune` first" in err


@pytest.mark.slow
def test_trials_run_in_parallel_rounds_on_ray_reproducibly_as_a_study_of_their_own(tmp_path):
    ray = pytest.importorskip("ray")
    from bench.run.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        first, _ = tune(tmp_path / "a", trials=4, algorithms=("cnp",), executor=RayExecutor(cpus_per_job=1), parallel=2)
        again, _ = tune(tmp_path / "b", trials=4, algorithms=("cnp",), executor=RayExecutor(cpus_per_job=1), parallel=2)
    finally:
        ray.shutdown()
    assert trial_summaries(again) == trial_summaries(first)
    assert [t["status"] for t in first[0]["trials_run"]] == ["completed"] * 4
    assert first[0]["parallel"] == 2
    one_at_a_time, _ = tune(tmp_path / "c", trials=4, algorithms=("cnp",))
    assert "parallel" not in one_at_a_time[0] and one_at_a_time[0]["study_sha256"] != first[0]["study_sha256"]
    (ray_study,) = (tmp_path / "a" / "tuning" / "sine" / "smoke").glob("cnp-*")
    trial_records = [records.load_record(p) for trial in sorted(ray_study.glob("trial-*"))
                     for p in records.iter_record_paths(trial)]
    assert len(trial_records) == 4 and {r["executor"]["name"] for r in trial_records} == {"ray"}
