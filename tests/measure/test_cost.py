"""`bench cost`: the projection, the measured run times beside it, the start time, and bad input."""

from __future__ import annotations

import json

from tests.conftest import read_records


def test_cost_projects_a_tier_and_shows_measured_run_times_beside_it(cli, tmp_path):
    assert cli("run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--results-dir", str(tmp_path))[0] == 0
    measured = sum(r["timing"]["wall_time_s"] for r in read_records(tmp_path)) / 60
    code, out, err = cli("cost", "sine", "--tier", "smoke", "--format", "json", "--results-dir", str(tmp_path))
    assert code == 0, err
    (result,) = json.loads(out)
    assert result["suite"] == "sine" and result["tier"] == "smoke"
    assert result["algorithms"] >= 2 and result["seeds"] == 1
    assert result["projected_run_min"] > 0
    assert result["measured_runs"] == 2
    assert abs(result["measured_run_min"] - measured) < 0.05
    assert 0 < result["start_s"] < 60
    assert all(row["step_s"] > 0 for row in result["rows"])
    (stored,) = (tmp_path / "cost").glob("cost-smoke-*.json")
    assert json.loads(stored.read_text())["suites"] == [result]


def test_cost_of_an_unknown_suite_is_a_clear_error_before_any_timing(cli, tmp_path):
    code, _, err = cli("cost", "sine", "sinus", "--results-dir", str(tmp_path))
    assert code == 2
    assert "sinus" in err
    assert not (tmp_path / "cost").exists()


def test_cost_and_perf_records_are_not_taken_for_run_records(cli, tmp_path):
    (tmp_path / "perf").mkdir(parents=True)
    (tmp_path / "perf" / "perf-x.json").write_text('{"rows": []}')
    (tmp_path / "cost").mkdir()
    (tmp_path / "cost" / "cost-x.json").write_text('{"suites": []}')
    from bench.records import load_records

    assert load_records(tmp_path) == []
