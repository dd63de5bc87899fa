from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.algorithms import ALGORITHMS
from bench.results import check
from bench.results.check import (
    Baseline,
    Entry,
    Thresholds,
    compare,
    compare_metric,
    compare_ratio,
    machine_class,
    slow_algorithms,
    with_second_timing,
)
from tests.conftest import HAS_OMNIGLOT, read_records, snapshot

FAST = ["suite.meta_iterations=10", "suite.val_every=5"]  # budget only: the protocol (and its hash) is unchanged


def entry(per_task, lower_is_better=False, metric="accuracy", **changes) -> Entry:
    values = [float(v) for v in per_task]
    base = Entry(algorithm="maml", metric=metric, lower_is_better=lower_is_better, per_task=values,
                 mean=float(np.mean(values)), ci95=0.0, seeds=[0], suite_version=1, protocol_hash="p", test_sha256="e",
                 hyperparameters={"inner_lr": 0.01}, task_chunk=None, meta_train_tasks_per_s=100.0, test_tasks_per_s=50.0,
                 meta_train_seconds=2.0, test_seconds=1.0, peak_mem_mb=500.0, machine_class={"device_name": "x"})
    return replace(base, **changes)


RNG = np.random.default_rng(0)
ACCURACY = RNG.uniform(40, 100, size=200)


@pytest.mark.parametrize("shift, verdict", [(-5.0, "regression"), (-1.0, "ok"), (0.0, "ok"), (5.0, "improvement")])
def test_accuracy_judged_by_paired_test_and_minimum_effect(shift, verdict):
    new = ACCURACY + shift + RNG.normal(0, 1, size=200)
    assert compare_metric(entry(ACCURACY), entry(new), Thresholds())["verdict"] == verdict


def test_lower_is_better_for_mse():
    mse = RNG.uniform(0.1, 2, size=200)
    base = entry(mse, lower_is_better=True, metric="mse")
    assert compare_metric(base, entry(mse * 1.3, lower_is_better=True, metric="mse"), Thresholds())["verdict"] == "regression"
    assert compare_metric(base, entry(mse * 0.7, lower_is_better=True, metric="mse"), Thresholds())["verdict"] == "improvement"
    assert compare_metric(base, entry(mse * 1.05, lower_is_better=True, metric="mse"), Thresholds())["verdict"] == "ok"


def test_a_large_but_noisy_difference_is_not_a_regression():
    base = np.full(20, 60.0)
    new = base - 5 + RNG.normal(0, 60, size=20)  # worse on average, but not distinguishable from noise
    result = compare_metric(entry(base), entry(new), Thresholds())
    assert result["p_worse"] > 0.05 and result["verdict"] == "ok"


def test_speed_and_memory_are_judged_only_on_the_same_machine_class_and_long_enough_segments():
    train, test = "meta-train tasks/s", "test episodes/s"
    slow = compare_ratio(train, 100.0, 40.0, 2.0, 5.0, True, 0.5, same_machine=True)
    assert slow["verdict"] == "regression" and slow["ratio"] == 0.4
    assert compare_ratio(train, 100.0, 60.0, 2.0, 3.3, True, 0.5, True)["verdict"] == "ok"
    elsewhere = compare_ratio(train, 100.0, 40.0, 2.0, 5.0, True, 0.5, same_machine=False)
    assert elsewhere["verdict"] == "not judged" and "machine" in elsewhere["why"]
    assert compare_ratio(train, 100.0, 40.0, 0.01, 0.03, True, 0.5, True)["verdict"] == "not judged"
    assert compare_ratio(test, 100.0, 40.0, 1.0, 2.5, True, 0.5, True)["verdict"] == "not judged"  # one short call
    assert compare_ratio(test, 100.0, 40.0, 2.0, 5.0, True, 0.5, True)["verdict"] == "regression"
    assert compare_ratio("MB", 500.0, 800.0, None, None, False, 0.5, True)["verdict"] == "regression"
    assert compare_ratio("MB", 500.0, 700.0, None, None, False, 0.5, True)["verdict"] == "ok"


@pytest.mark.parametrize("second_rate, verdict", [(90.0, "ok"), (45.0, "regression")])
def test_a_throughput_regression_needs_both_timings_slow(second_rate, verdict):
    baseline = Baseline("sine", "smoke", {"maml": entry(ACCURACY)}, source="b.json")
    first = {"maml": entry(ACCURACY, meta_train_tasks_per_s=40.0, records=["a.json"])}
    summary = compare(baseline, first, Thresholds(), here={"device_name": "x"})
    assert slow_algorithms(summary) == ["maml"]
    second = {"maml": entry(ACCURACY, meta_train_tasks_per_s=second_rate, test_tasks_per_s=20.0, records=["b.json"])}
    again = with_second_timing(summary, baseline, first, second, Thresholds(), {}, {"device_name": "x"})
    row = again["rows"][0]
    assert row["verdict"] == verdict and again["passed"] == (verdict == "ok")
    assert row["throughput"][0]["ratio"] == second_rate / 100.0
    assert row["throughput"][1]["ratio"] == 1.0  # the first's test timing was the faster one
    assert row["retimed"]["ratios"] == [[0.4, second_rate / 100.0], [1.0, 0.4]]
    assert row["retimed"]["identical_values"] and row["records"] == ["a.json", "b.json"]
    assert "timed twice, the faster judged (meta-train 0.40 then " in check.render_markdown(again)


def test_machine_class_ignores_the_host_but_not_the_device():
    env = {"device": "cpu", "device_name": "Xeon", "cpu_count": 2, "torch_threads": 2, "torch": "2.14.1+cu128",
           "hostname": "a"}
    assert machine_class(env) == machine_class({**env, "hostname": "b", "torch": "2.14.0"})
    assert machine_class(env) != machine_class({**env, "device_name": "EPYC"})


def sets(overrides):
    return [arg for item in overrides for arg in ("--set", item)]


def test_baseline_then_an_unchanged_rerun_passes_with_identical_values(cli, tmp_path):
    baseline = tmp_path / "baselines" / "sine-smoke.json"
    code, out, err = cli("baseline", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--results-dir",
                         str(tmp_path / "results"), "--out", str(baseline), *sets(FAST))
    assert code == 0, err
    stored = json.loads(baseline.read_text())
    assert sorted(stored["entries"]) == ["cnp", "maml"]
    assert all(Path(p).is_file() for e in stored["entries"].values() for p in e["records"])
    code, out, err = cli("check", "sine", "--baseline", str(baseline), "--results-dir", str(tmp_path / "rerun"),
                         "--json", str(tmp_path / "summary.json"), "--markdown", str(tmp_path / "summary.md"), *sets(FAST))
    assert code == 0, out + err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["passed"] and all(r["metric"]["identical_episodes_values"] for r in summary["rows"])
    assert "PASSED" in out and (tmp_path / "summary.md").read_text() == out.rstrip("\n") + "\n"
    rerun = {r["algorithm"]["name"]: r["execution"] for r in read_records(tmp_path / "rerun")}
    assert rerun["maml"]["task_chunk_choice"] == "set to the baseline's"
    assert rerun["maml"]["task_chunk"] == stored["entries"]["maml"]["task_chunk"]


@pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")
def test_maml_without_inner_learning_rate_is_caught(cli, tmp_path):
    # A short budget: MAML's test-time adaptation (10 steps) is worth far more than 2 points even
    # from a barely trained network, and without it (inner_lr=0) accuracy stays near chance.
    budget = sets(["suite.meta_iterations=4", "suite.val_every=2"])
    baseline = tmp_path / "omniglot.json"
    assert cli("baseline", "omniglot-5w1s", "--algorithms", "maml", "--results-dir", str(tmp_path / "results"),
               "--out", str(baseline), *budget)[0] == 0
    code, out, _ = cli("check", "omniglot-5w1s", "--baseline", str(baseline), "--set", "maml.inner_lr=0", *budget,
                       "--json", str(tmp_path / "lr.json"), "--results-dir", str(tmp_path / "lr"))
    summary = json.loads((tmp_path / "lr.json").read_text())
    [row] = summary["rows"]
    assert code == 1 and summary["regressions"] == ["maml"] and row["metric"]["verdict"] == "regression", out
    assert row["hyperparameters_changed"] == {"inner_lr": [0.4, 0]} and "FAILED: regression in maml" in out


@pytest.mark.parametrize("algorithm", ["maml", "fomaml"])
def test_the_ci_tier_of_sine_catches_a_disabled_inner_loop(algorithm, cli, tmp_path):
    """CI's fastest check: at the smoke tier (40 meta-iterations) adaptation is worth nothing yet and
    inner_lr=0 passed; the ci tier (500) is long enough that it is caught."""
    from tests.conftest import ROOT

    code, out, _ = cli("check", "sine", "--baseline", str(ROOT / "results" / "baselines" / "sine-ci.json"),
                       "--algorithms", algorithm, "--set", f"{algorithm}.inner_lr=0", "--results-dir", str(tmp_path / "r"),
                       "--json", str(tmp_path / "lr.json"))
    summary = json.loads((tmp_path / "lr.json").read_text())
    assert code == 1 and summary["tier"] == "ci" and summary["regressions"] == [algorithm], out


@pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")
def test_an_injected_slowdown_is_caught_and_a_slow_moment_is_not(cli, tmp_path, monkeypatch):
    """(An unchanged rerun passing: the second run below, and CI's checks; a disabled inner loop being
    caught: test_maml_without_inner_learning_rate_is_caught.)"""
    baseline = tmp_path / "omniglot.json"
    assert cli("baseline", "omniglot-5w1s", "--algorithms", "anil", "--results-dir", str(tmp_path / "results"),
               "--out", str(baseline))[0] == 0
    anil = ALGORITHMS.get("anil")
    original = anil.accumulate_meta_gradient

    # Slowed where the meta-gradient is taken, so that the run keeps its task chunks and its values.
    def slowed(self, batch):
        time.sleep(0.25)  # several times a smoke-tier step
        return original(self, batch)

    monkeypatch.setattr(anil, "accumulate_meta_gradient", slowed)
    code, out, _ = cli("check", "omniglot-5w1s", "--baseline", str(baseline), "--json", str(tmp_path / "slow.json"),
                       "--results-dir", str(tmp_path / "slow"), "--no-retime")  # both timings slow: a unit test
    slow = json.loads((tmp_path / "slow.json").read_text())["rows"][0]
    assert code == 1 and slow["metric"]["verdict"] == "ok", out
    assert slow["throughput"][0]["verdict"] == "regression" and slow["throughput"][0]["ratio"] < 0.5
    assert slow["metric"]["identical_episodes_values"] and slow["task_chunk"][0] == slow["task_chunk"][1] is not None
    assert "retimed" not in slow and not (tmp_path / "slow-retimed").exists()
    monkeypatch.setattr(anil, "accumulate_meta_gradient", original)

    # A slow moment of the host (here: the first of the two runs slowed) does not fail the check.
    real_execute, runs = check.execute, []

    def first_run_slowed(plan, **options):
        runs.append(plan)
        with monkeypatch.context() as patch:
            if len(runs) == 1:
                patch.setattr(anil, "accumulate_meta_gradient", slowed)
            return real_execute(plan, **options)

    monkeypatch.setattr(check, "execute", first_run_slowed)
    code, out, _ = cli("check", "omniglot-5w1s", "--baseline", str(baseline), "--json", str(tmp_path / "moment.json"),
                       "--results-dir", str(tmp_path / "moment"))
    moment = json.loads((tmp_path / "moment.json").read_text())["rows"][0]
    assert code == 0 and len(runs) == 2 and moment["retimed"]["identical_values"], out
    assert moment["metric"]["identical_episodes_values"] and moment["metric"]["verdict"] == "ok"
    assert moment["retimed"]["records"][0].startswith(str(tmp_path / "moment-retimed"))
    assert moment["retimed"]["ratios"][0][0] < 0.5 <= moment["throughput"][0]["ratio"] == moment["retimed"]["ratios"][0][1]


def test_bad_input_is_exit_2_before_any_run(cli, tmp_path):
    baseline = tmp_path / "b.json"
    assert cli("baseline", "sine", "--algorithms", "cnp", "--results-dir", str(tmp_path / "r"), "--out", str(baseline),
               "--set", FAST[0], "--set", FAST[1])[0] == 0
    before = snapshot(tmp_path)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    cases = [
        (["check", "sine", "--baseline", str(tmp_path / "missing.json")], "no such file"),
        (["check", "sine", "--baseline", str(corrupt)], "not a readable bench baseline"),
        (["check", "sine-k5", "--baseline", str(baseline)], "baseline of suite 'sine'"),
        (["check", "sine", "--baseline", str(baseline), "--tier", "standard"], "smoke-tier baseline"),
        (["check", "sine", "--baseline", str(baseline), "--algorithms", "maml"], "no baseline for maml"),
        (["check", "sine", "--baseline", str(baseline), "--set", "suite.test_tasks=10"], "not comparable"),
        (["check", "sine", "--baseline", str(baseline), "--alpha", "2"], "--alpha"),
        (["check", "sine", "--baseline", str(baseline), "--records", str(tmp_path / "r"), "--set", "cnp.lr=1"], "--records"),
        (["baseline", "sine", "--algorithms", "cnp", "--out", str(baseline)], "--replace"),
    ]
    for args, message in cases:
        code, out, err = cli(*args, "--results-dir", str(tmp_path / "new")) if args[0] == "check" and "--records" not in args \
            else cli(*args)
        assert code == 2 and message in err, (args, err)
        assert not (tmp_path / "new").exists()
    corrupt.unlink()
    assert snapshot(tmp_path) == before


def test_a_directory_of_records_as_baseline_and_stored_records_as_the_new_side(cli, tmp_path):
    for name in ("old", "new"):
        assert cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--results-dir", str(tmp_path / name),
                   *sets(FAST))[0] == 0
    code, out, err = cli("check", "sine", "--tier", "smoke", "--baseline", str(tmp_path / "old"),
                         "--records", str(tmp_path / "new"))
    assert code == 0 and "identical per-episode values" in out, out + err


def test_records_of_other_training_seeds_than_the_baseline_s_are_said_to_be(cli, tmp_path):
    for name, seed in (("old", "0"), ("new", "1")):
        assert cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--seeds", seed,
                   "--results-dir", str(tmp_path / name), *sets(FAST))[0] == 0
    code, out, err = cli("check", "sine", "--tier", "smoke", "--baseline", str(tmp_path / "old"),
                         "--records", str(tmp_path / "new"))
    assert code in (0, 1) and "training seeds differ: baseline 0, new 1" in out, out + err


def test_the_same_episodes_read_from_other_data_are_not_compared(cli, tmp_path):
    """Same drawn episodes (hash of the data key and indices), other bytes read: refused, named as such."""
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--results-dir", str(tmp_path / "old"),
               *sets(FAST))[0] == 0
    [path] = (tmp_path / "old").rglob("cnp-*.json")
    record = json.loads(path.read_text())
    assert record["seeds"]["test_episodes"]["contents_sha256"] and record["seeds"]["val_episodes"]["contents_sha256"]
    record["seeds"]["test_episodes"]["contents_sha256"] = "0" * 64
    new = tmp_path / "new" / path.relative_to(tmp_path / "old")
    new.parent.mkdir(parents=True)
    new.write_text(json.dumps(record))
    code, out, err = cli("check", "sine", "--tier", "smoke", "--baseline", str(tmp_path / "old"),
                         "--records", str(tmp_path / "new"))
    assert code == 2 and "drew the baseline's test episodes but read other contents" in err, out + err
    record["seeds"]["test_episodes"]["contents_sha256"] = None  # a record from before contents were hashed pairs
    new.write_text(json.dumps(record))
    code, out, err = cli("check", "sine", "--tier", "smoke", "--baseline", str(tmp_path / "old"),
                         "--records", str(tmp_path / "new"))
    assert code == 0, out + err
