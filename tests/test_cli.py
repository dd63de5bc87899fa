from __future__ import annotations

import json

import pytest

from tests.conftest import read_records, snapshot


def test_list_json_names_suites_with_tiers_and_algorithms_with_task_types(cli):
    code, out, _ = cli("list", "--format", "json")
    listing = json.loads(out)
    assert code == 0
    suites = {s["name"]: s for s in listing["suites"]}
    assert suites["sine"]["tiers"] == ["ci", "paper", "smoke", "standard"]
    assert suites["omniglot-5w1s"]["tiers"] == ["paper", "smoke", "standard"]
    algorithms = {a["name"]: a for a in listing["algorithms"]}
    assert {"maml", "fomaml", "reptile", "metasgd", "anil", "cnp", "transfer", "maml.l2l", "metasgd.l2l"} <= set(algorithms)
    assert algorithms["cnp"]["task_types"] == ["regression"]


def test_validate_passes_on_the_committed_suites(cli):
    code, out, _ = cli("validate")
    assert code == 0 and out.startswith("ok:")


def test_run_then_leaderboard_in_every_format(cli, tmp_path):
    code, out, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--results-dir", str(tmp_path))
    assert code == 0, err
    assert "maml" in out and "cnp" in out and "mse (lower is better)" in out
    code, out, _ = cli("leaderboard", "sine", "--results-dir", str(tmp_path), "--format", "json")
    rows = json.loads(out)
    assert code == 0 and {r["algorithm"] for r in rows} == {"maml", "cnp"}
    for row in rows:
        assert {"algorithm", "mean", "ci95", "n_episodes", "seeds"} <= set(row) and row["seeds"] == [0]
    stored = {r["algorithm"]["name"]: r["metric"]["mean"] for r in read_records(tmp_path)}
    assert {r["algorithm"]: r["mean"] for r in rows} == stored
    for fmt, marker in (("csv", "rank,algorithm,"), ("markdown", "| rank | algorithm |"), ("table", "rank")):
        code, out, _ = cli("leaderboard", "sine", "--results-dir", str(tmp_path), "--format", fmt)
        assert code == 0 and marker in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "sinus"], "unknown suite 'sinus'; did you mean 'sine'"),
        (["run", "sine", "--algorithms", "mamal"], "unknown algorithm 'mamal'; did you mean 'maml'"),
        (["run", "sine", "--tier", "fast"], "unknown tier 'fast'"),
        (["run", "sine", "--set", "maml.inner_rl=0.1"], "maml has no hyperparameter 'inner_rl'; did you mean 'inner_lr'"),
        (["run", "sine", "--set", "maml.inner_lr=fast"], "maml.inner_lr: Input should be a valid number"),
        (["run", "sine", "--set", "suite.shot=3"], "suite has no field 'shot' to set; did you mean 'shots'"),
        (["run", "sine", "--set", "suite.shots=0"], "--set suite.shots: Input should be greater than or equal to 1"),
        (["run", "sine", "--set", "inner_lr"], "expected ALGORITHM.NAME=VALUE"),
        (["run", "sine", "--algorithms", "cnp", "--set", "maml.inner_lr=0.1"], "maml is not among the algorithms being run"),
        (["run", "sine", "--device", "cuda"], "CUDA is not available"),
        (["run", "sine", "--device", "tpu"], "expected cpu, cuda, cuda:N or auto"),
        (["leaderboard", "sine", "--format", "json"], "no completed records for suite 'sine'"),
        # Values that used to be accepted and then failed after training (or silently meant something else).
        (["run", "sine", "--set", "maml.inner_lr=nan"], "maml.inner_lr: Input should be a finite number"),
        (["run", "sine", "--set", "maml.inner_lr=inf"], "maml.inner_lr: Input should be a finite number"),
        (["run", "sine", "--set", "maml.inner_lr=1e400"], "maml.inner_lr: Input should be a finite number"),
        (["run", "sine", "--set", "maml.inner_steps=-3"], "maml.inner_steps: Input should be greater than or equal to 0"),
        (["run", "sine", "--set", "maml.outer_lr=-0.001"], "maml.outer_lr: Input should be greater than 0"),
        (["run", "sine", "--set", "reptile.inner_steps=0"], "reptile.inner_steps: Input should be greater than or equal to 1"),
        (["run", "sine", "--set", "metasgd.lr_init_low=0.5"], "metasgd: lr_init_low (0.5) must not exceed lr_init_high"),
        (["run", "sine", "--set", "suite.test_tasks=99999999999999999999"],
         "--set suite.test_tasks: Input should be less than or equal to 1000000"),
        (["run", "sine", "--set", "suite.seeds=[0,0]"], "--set suite.seeds: give each training seed once (0 repeated)"),
        (["run", "sine", "--seeds", "99999999999999999999"], "training seed 99999999999999999999 is not a whole number"),
        (["run", "s" * 300], "cannot look it up (File name too long)"),
        (["run", "banking77-5w1s", "--encoder", "wordcnn", "--algorithms", "centroid,protonet"],
         "algorithm 'centroid' does not apply to suite 'banking77-5w1s'"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cli, tmp_path, args, message):
    if "--device" in args and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "sine" / "smoke").mkdir(parents=True)
    kept = tmp_path / "sine" / "smoke" / "kept.json"
    kept.write_text("{}")  # not read: it is only there to show that nothing is touched
    before = snapshot(tmp_path)
    code, out, err = cli(*args, "--results-dir", str(tmp_path / "empty" if args[0] == "leaderboard" else tmp_path)) \
        if args[0] == "leaderboard" else cli(*args[:2], *args[2:], "--results-dir", str(tmp_path / "new"))
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert out == ""
    assert snapshot(tmp_path) == before


def test_a_suite_file_with_a_wrong_field(cli, tmp_path, tiny_suite):
    tiny_suite.write_text(tiny_suite.read_text().replace("meta_batch_size: 25", "meta_batch_size: -3"))
    code, _, err = cli("run", str(tiny_suite), "--results-dir", str(tmp_path / "r"))
    assert code == 2 and f"{tiny_suite}: field 'meta_batch_size'" in err
    assert not (tmp_path / "r").exists()
    code, _, err = cli("validate", str(tiny_suite))
    assert code == 2 and "meta_batch_size" in err


def test_a_corrupt_record_stops_run_and_leaderboard_before_any_work(cli, tmp_path):
    corrupt = tmp_path / "sine" / "smoke" / "maml-seed0-x.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text('{"schema_version": 1, "status": "comp')
    before = snapshot(tmp_path)
    for args in (["run", "sine", "--tier", "smoke"], ["leaderboard", "sine"]):
        code, _, err = cli(*args, "--results-dir", str(tmp_path))
        assert code == 2 and f"{corrupt}: not a readable bench record" in err and "delete it" in err
    assert snapshot(tmp_path) == before


def test_an_unwritable_results_directory(cli, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    code, _, err = cli("run", "sine", "--tier", "smoke", "--results-dir", str(blocker / "results"))
    assert code == 2 and "is not writable" in err


def test_a_failed_run_exits_1_and_says_where_its_record_is(cli, tmp_path):
    code, out, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml", "--set", "maml.inner_lr=1e6",
                         "--results-dir", str(tmp_path))
    assert code == 1 and "maml seed 0 diverged: the meta-training loss is nan at iteration" in err and str(tmp_path) in err


def test_validate_says_what_run_would_say(cli, tmp_path, tiny_suite):
    text = tiny_suite.read_text()
    tiny_suite.write_text(text.replace("\n  maml: {inner_lr: 0.01", "\n  mamll: {inner_lr: 0.01"))
    code, _, err = cli("validate", str(tiny_suite))
    assert code == 2 and "algorithms: unknown algorithm 'mamll'; did you mean 'maml'" in err
    tiny_suite.write_text(text.replace("\n  maml: {inner_lr: 0.01", "\n  maml: {inner_lr: -0.1"))
    code, _, err = cli("validate", str(tiny_suite))
    assert code == 2 and "algorithms: maml.inner_lr: Input should be greater than or equal to 0" in err
    code, _, run_err = cli("run", str(tiny_suite), "--dry-run", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and run_err == err


@pytest.mark.parametrize(("search", "message"), [
    ("mamll: {outer_lr: {low: 0.001, high: 0.01, log: true}}", "search: unknown algorithm 'mamll'; did you mean 'maml'"),
    ("maml: {first_order: {choices: [true]}}", "search.maml: 'first_order' is not a tunable field of maml"),
    ("maml: {outer_lr: {low: 0.01, high: 0.001, log: true}}", "search.maml.outer_lr: search range [0.01, 0.001] is empty"),
    ("maml: {outer_lr: {low: 0.00001, high: 0.01, log: true}}", "is not within maml's own space"),
])
def test_a_suite_s_search_space_may_only_narrow_a_known_algorithm_s_own(cli, tiny_suite, search, message):
    tiny_suite.write_text(tiny_suite.read_text() + f"search: {{{search}}}\n")
    code, _, err = cli("validate", str(tiny_suite))
    assert code == 2 and message in err, err


def test_a_suite_s_narrower_search_space_is_the_one_used(tiny_suite):
    from bench.algorithms import ALGORITHMS
    from bench.config import load_suite

    tiny_suite.write_text(tiny_suite.read_text() + "search: {maml: {outer_lr: {low: 0.001, high: 0.005, log: true}}}\n")
    space = ALGORITHMS.get("maml").search_space(load_suite(str(tiny_suite)))
    assert space["outer_lr"].to_json() == {"low": 0.001, "high": 0.005, "log": True}
    assert space["inner_lr"] == ALGORITHMS.get("maml").Hparams.search_space()["inner_lr"]  # the rest unchanged


def test_a_key_given_twice_in_a_suite_file_is_refused(cli, tiny_suite):
    tiny_suite.write_text(tiny_suite.read_text() + "meta_batch_size: 5\n")  # the file already has one
    code, _, err = cli("validate", str(tiny_suite))
    assert code == 2 and "key 'meta_batch_size' given twice in one mapping (keep one)" in err


@pytest.mark.parametrize("blocked", [".locks", "sine/smoke", ".checkpoints"])
def test_a_file_where_a_results_subdirectory_belongs_is_one_line_before_any_work(cli, tmp_path, blocked):
    (tmp_path / blocked).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / blocked).write_text("")
    before = snapshot(tmp_path)
    for dry_run in ([], ["--dry-run"]):
        code, out, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--results-dir", str(tmp_path), *dry_run)
        assert code == 2 and "is not writable (Not a directory" in err and err.count("\n") == 1, err
    assert snapshot(tmp_path) == before


def test_dry_run_writes_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    code, out, _ = cli("run", "sine", "--tier", "smoke", "--dry-run", "--results-dir", str(tmp_path / "results"))
    assert code == 0 and "cnp seed 0" in out
    assert not (tmp_path / "results").exists() and not (tmp_path / "cache").exists()


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path, monkeypatch, capsys):
    import io
    import os

    from bench.cli import main

    class ClosedPipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self):
            return os.open(os.devnull, os.O_WRONLY)

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    code = main(["-q", "list"])
    assert code == 141 and capsys.readouterr().err == ""


def test_a_full_disk_at_the_final_record_keeps_the_result_and_says_where(cli, tmp_path, monkeypatch):
    import errno
    import re
    from pathlib import Path

    from bench import records

    real = records.write_atomic
    record_dir = tmp_path / "sine" / "smoke"

    def full_at_the_end(path, text):
        if path.parent == record_dir and '"status": "completed"' in str(text):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)

    monkeypatch.setattr(records, "write_atomic", full_at_the_end)
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--results-dir", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "(No space left on device); it is kept in" in err, err
    kept = Path(re.search(r"it is kept in (\S+): free space", err)[1])
    assert kept.parent == tmp_path / ".checkpoints" / "sine" / "smoke"
    result = json.loads(kept.read_text())
    assert result["status"] == "completed" and len(result["metric"]["per_task"]) == 50
    [stored] = record_dir.glob("*.json")
    kept.replace(stored)  # what the message says to do: then it is an ordinary record
    code, out, _ = cli("leaderboard", "sine", "--tier", "smoke", "--results-dir", str(tmp_path), "--format", "json")
    assert code == 0 and json.loads(out)[0]["mean"] == result["metric"]["mean"]
