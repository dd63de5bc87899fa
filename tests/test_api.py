"""`bench.api`: what a notebook calls, and what every command of `python -m bench` is a thin call into."""

from __future__ import annotations

import pytest

from bench import api
from bench.cli import COMMANDS, build_parser
from bench.errors import BenchError


def test_run_returns_the_records_the_leaderboard_then_averages(tmp_path):
    records = api.run("sine", algorithms=["maml", "cnp"], seeds=[0, 1], tier="smoke", results_dir=tmp_path,
                      overrides=["suite.meta_iterations=6", "suite.val_every=3", "suite.test_tasks=20"], progress=False)
    assert sorted((r["algorithm"]["name"], r["seeds"]["training_seed"]) for r in records) == [
        ("cnp", 0), ("cnp", 1), ("maml", 0), ("maml", 1)]
    assert all(r["status"] == "completed" for r in records)
    ((meta, table),) = api.leaderboard("sine", tmp_path, "smoke")
    assert meta["n_records"] == 4 and meta["metric"] == "mse"
    for algorithm in ("maml", "cnp"):
        mine = [r["metric"]["mean"] for r in records if r["algorithm"]["name"] == algorithm]
        row = table[table["algorithm"] == algorithm].iloc[0]
        assert row["n_seeds"] == 2 and row["mean"] == pytest.approx(sum(mine) / 2)
    assert "maml" in api.render_leaderboard([(meta, table)], "markdown")


def test_plan_checks_before_any_work_and_writes_nothing(tmp_path):
    planned = api.plan("sine", algorithms=["maml"], seeds=[3], tier="smoke", results_dir=tmp_path / "r", dry_run=True)
    assert [(run.algorithm.name, run.seed) for run in planned.runs] == [("maml", 3)]
    assert not (tmp_path / "r").exists()
    with pytest.raises(BenchError, match="did you mean"):
        api.plan("sine", algorithms=["mamll"], results_dir=tmp_path, dry_run=True)


def test_every_command_has_help_ending_with_an_example_of_itself(capsys):
    parser = build_parser()
    for command in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args([command.name, "--help"])
        assert exit_.value.code == 0
        lines = capsys.readouterr().out.rstrip().splitlines()
        assert lines[-2:] == ["example:", f"  {command.example}"]
        assert command.example.startswith(f"python -m bench {command.name} ")
        # the example itself parses
        build_parser().parse_args(command.example.split()[3:])
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "examples:\n  python -m bench" in capsys.readouterr().out
