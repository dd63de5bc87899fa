"""Executors: kill -9 at random moments loses nothing and --resume finishes the grid; two processes
share a results directory; the Ray executor gives the local executor's numbers and survives dying workers."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import records
from bench.errors import BenchError
from bench.run.checkpoints import CHECKPOINTS
from bench.run.execution import ExecutionOptions
from bench.run.executors import LocalExecutor, RayExecutor, execute, import_ray
from bench.run.runner import plan_run
from tests.conftest import ROOT

GRID = ["sine", "--tier", "smoke", "--algorithms", "maml,cnp,reptile", "--seeds", "0,1",
        "--set", "suite.meta_iterations=150", "--set", "suite.val_every=50", "--task-chunk", "5", "--checkpoint-every", "10"]
N_JOBS = 6
# Kill points per test run: a few in CI; `BENCH_KILL_POINTS=40 pytest tests/run/test_executors.py -k kill` for the measurement.
KILL_POINTS = int(os.environ.get("BENCH_KILL_POINTS", "4"))


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench", "-q", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, timeout: float = 600) -> subprocess.Popen:
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return process


def per_task_by_job(results_dir: Path) -> dict[tuple[str, int], list[float]]:
    found = {}
    for record in records.load_records(results_dir, "sine"):
        assert record["status"] == "completed", record["_path"]
        key = (record["algorithm"]["name"], record["seeds"]["training_seed"])
        assert key not in found, f"two records of {key}"
        found[key] = record["metric"]["per_task"]
    return found


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_record_and_resume_finishes_the_grid(tmp_path):
    started = time.perf_counter()
    finished(bench("run", *GRID, "--results-dir", str(tmp_path / "reference")))
    whole_run_s = time.perf_counter() - started
    reference = per_task_by_job(tmp_path / "reference")
    assert len(reference) == N_JOBS

    rng = random.Random(20261124)
    kills = rounds = continued = mid_run = 0
    while kills < KILL_POINTS:
        rounds += 1
        results_dir = tmp_path / f"round{rounds}"
        kept: dict[Path, bytes] = {}  # every finished record so far, with its bytes
        while True:
            process = bench("run", *GRID, "--results-dir", str(results_dir), "--resume")
            try:  # kill at a moment drawn uniformly over a whole run's time, start-up included
                process.wait(timeout=rng.uniform(0, whole_run_s) if kills < KILL_POINTS else None)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
            else:
                assert process.returncode == 0, process.stderr.read()
                break
            stored = records.load_records(results_dir, "sine") if (results_dir / "sine").exists() else []  # all readable
            mid_run += any(r["status"] == "running" for r in stored)
            for path, data in kept.items():
                assert path.read_bytes() == data, f"{path} changed after kill {kills}"
            kept.update({Path(r["_path"]): Path(r["_path"]).read_bytes() for r in stored if r["status"] == "completed"})
        done = records.load_records(results_dir, "sine")
        continued += sum(len(r.get("resumed", [])) for r in done)
        assert per_task_by_job(results_dir) == reference, f"round {rounds}: results differ from the uninterrupted run"
        assert all(Path(p).read_bytes() == data for p, data in kept.items())
    print(f"\nkill -9 points: {kills} in {rounds} grid(s) of {N_JOBS} runs ({mid_run} while a run was training, the "
          f"others during start-up or between runs); continued from a checkpoint {continued} time(s); records lost or "
          f"changed: 0; results equal to the uninterrupted run's in every grid (whole grid {whole_run_s:.1f} s)")


@pytest.mark.slow
def test_two_processes_on_one_results_directory_lose_nothing(tmp_path):
    # Overlapping plans without --resume: every run gets its own record.
    first = bench("run", *GRID[:4], "maml,cnp", "--seeds", "0", "--results-dir", str(tmp_path / "plain"), "--task-chunk", "5")
    second = bench("run", *GRID[:4], "cnp,reptile", "--seeds", "0", "--results-dir", str(tmp_path / "plain"), "--task-chunk", "5")
    finished(first), finished(second)
    stored = records.load_records(tmp_path / "plain", "sine")
    assert sorted(r["algorithm"]["name"] for r in stored) == ["cnp", "cnp", "maml", "reptile"]
    assert all(r["status"] == "completed" for r in stored)
    cnp = [r["metric"]["per_task"] for r in stored if r["algorithm"]["name"] == "cnp"]
    assert cnp[0] == cnp[1]

    # The same grid with --resume in both: they share it, and every run is done exactly once.
    short = [*GRID, "--set", "suite.meta_iterations=60", "--set", "suite.val_every=20"]
    shared = [bench("run", *short, "--results-dir", str(tmp_path / "shared"), "--resume") for _ in range(2)]
    for process in shared:
        finished(process)
    assert len(per_task_by_job(tmp_path / "shared")) == N_JOBS
    assert not list((tmp_path / "shared" / CHECKPOINTS).rglob("*.pt"))


# Ray ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


SINE = ["suite.meta_iterations=60", "suite.val_every=20"]


@pytest.mark.slow
def test_ray_gives_the_local_executors_numbers_bit_for_bit_and_says_where_it_ran(tmp_path, ray_instance):
    algorithms = ["maml", "fomaml", "metasgd", "anil", "reptile", "cnp", "transfer"]
    options = ExecutionOptions(task_chunk=5, threads=1)

    def run(executor, results_dir):
        return execute(plan_run("sine", algorithms, [0, 1], "smoke", results_dir, "cpu", SINE, options),
                       progress=False, executor=executor)

    local = run(LocalExecutor(), tmp_path / "local")
    on_ray = run(RayExecutor(cpus_per_job=1), tmp_path / "ray")
    assert len(local) == len(on_ray) == 2 * len(algorithms)
    for a, b in zip(local, on_ray, strict=True):
        assert (a["algorithm"]["name"], a["seeds"]) == (b["algorithm"]["name"], b["seeds"])
        assert a["status"] == b["status"] == "completed"
        assert a["metric"]["per_task"] == b["metric"]["per_task"], a["algorithm"]["name"]
        assert a["execution"]["task_chunk"] == b["execution"]["task_chunk"]
    assert {r["executor"]["name"] for r in local} == {"local"}
    assert {r["executor"]["name"] for r in on_ray} == {"ray"}
    assert all(r["executor"]["node_id"] and r["executor"]["worker"]["pid"] != os.getpid() for r in on_ray)
    assert {r["environment"]["torch_threads"] for r in on_ray} == {1}
    # The driver wrote the records: they are on disk as returned.
    for record in on_ray:
        stored = records.load_record(Path(record["_path"]))
        assert stored["metric"]["per_task"] == record["metric"]["per_task"] and stored["executor"]["name"] == "ray"


@pytest.mark.slow
def test_check_runs_on_ray_and_passes_against_the_local_baseline(cli, tmp_path, ray_instance):
    code, out, err = cli("check", "sine", "--baseline", str(ROOT / "results" / "baselines" / "sine-smoke.json"),
                         "--executor", "ray", "--results-dir", str(tmp_path))
    assert code == 0, out + err
    stored = records.load_records(tmp_path, "sine")
    assert stored and {r["executor"]["name"] for r in stored} == {"ray"}


CRASHING_PLUGIN = textwrap.dedent('''
    """A test algorithm whose worker process dies (os._exit) a given number of times at one iteration."""
    import os

    from bench.algorithms.base import register
    from bench.algorithms.cnp import CNP, CNPHparams


    class CrashingHparams(CNPHparams):
        crash_marker: str = ""
        crash_times: int = 0
        crash_at: int = 25


    @register("crashing")
    class Crashing(CNP):
        Hparams = CrashingHparams

        def meta_train_step(self, batch, iteration):
            marker = self.hparams.crash_marker
            if iteration == self.hparams.crash_at and marker:
                crashes = open(marker).read().count("x") if os.path.exists(marker) else 0
                if crashes < self.hparams.crash_times:
                    with open(marker, "a") as handle:
                        handle.write("x")
                    os._exit(1)  # the worker process dies, as on an out-of-memory kill or a lost node
            return super().meta_train_step(batch, iteration)
''')


@pytest.mark.slow
def test_a_ray_job_whose_worker_dies_is_retried_then_failed_and_the_others_finish(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "crashing_plugin.py").write_text(CRASHING_PLUGIN)
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path / "plugins"), str(ROOT)]), "BENCH_PLUGINS": "crashing_plugin"}
    process = bench("run", "sine", "--tier", "smoke", "--algorithms", "crashing,cnp", "--seeds", "0", *sum(
        (["--set", s] for s in [*SINE, f"crashing.crash_marker={tmp_path / 'marker'}", "crashing.crash_times=1"]), []),
        "--checkpoint-every", "10", "--executor", "ray", "--retries", "1", "--results-dir", str(tmp_path / "results"), env=env)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err
    # One crash, then the retry continues from the checkpoint of iteration 20.
    stored = records.load_records(tmp_path / "results", "sine")
    assert [r["status"] for r in stored] == ["completed"] * 2
    assert (tmp_path / "marker").read_text() == "x"
    crashed = [r for r in stored if r.get("resumed")]
    assert [r["algorithm"]["name"] for r in crashed] == ["crashing"] and crashed[0]["resumed"][0]["at_iteration"] == 20
    assert crashed[0]["resumed"][0]["executor"]["name"] == "ray"

    process = bench("run", "sine", "--tier", "smoke", "--algorithms", "crashing,cnp", "--seeds", "0", *sum(
        (["--set", s] for s in [*SINE, f"crashing.crash_marker={tmp_path / 'always'}", "crashing.crash_times=99"]), []),
        "--executor", "ray", "--retries", "2", "--results-dir", str(tmp_path / "failing"), env=env)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1
    by_name = {r["algorithm"]["name"]: r for r in records.load_records(tmp_path / "failing", "sine")}
    assert by_name["cnp"]["status"] == "completed"
    assert by_name["crashing"]["status"] == "failed"
    assert "3 attempt(s)" in by_name["crashing"]["error"]["message"]
    assert (tmp_path / "always").read_text() == "xxx", "tried once and retried twice"
    assert "crashing seed 0 failed" in err


@pytest.mark.slow
def test_sigterm_to_a_ray_run_records_the_runs_in_flight_as_interrupted(tmp_path):
    pytest.importorskip("ray")
    results = tmp_path / "results"
    process = bench("run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp,reptile", "--seeds", "0",
                    "--executor", "ray", "--results-dir", str(results))
    deadline = time.monotonic() + 120
    while len(list((results / "sine" / "smoke").glob("*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    statuses = [r["status"] for r in records.load_records(results, "sine")]
    assert len(statuses) == 3 and "running" not in statuses and "interrupted" in statuses


def test_an_interrupt_while_ray_jobs_are_being_submitted_leaves_no_record_running(tmp_path, ray_instance, monkeypatch):
    """The window CI once hit: SIGTERM after a job's record said `running` but before it was a Ray task."""
    import bench.run.executors as executors

    real, calls = executors.describe_host, []

    def interrupted_at_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(executors, "describe_host", interrupted_at_the_second)
    plan = plan_run("sine", ["maml", "cnp", "reptile"], [0], "smoke", tmp_path, "cpu", SINE)
    with pytest.raises(KeyboardInterrupt):
        execute(plan, progress=False, executor=RayExecutor(cpus_per_job=1))
    statuses = sorted(r["status"] for r in records.load_records(tmp_path, "sine"))
    assert statuses == ["interrupted", "interrupted"]  # the submitted one and the one about to be; the third not begun


def test_a_ray_resource_request_no_node_can_meet_is_refused_before_any_work(cli, tmp_path, ray_instance):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "cnp", "--executor", "ray",
                       "--cpus-per-job", "64", "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "--cpus-per-job 64: the Ray cluster has 2 CPU(s) in all" in err
    assert not (tmp_path / "r").exists()


def test_the_ray_executor_without_ray_says_how_to_install_it(monkeypatch, cli, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(BenchError, match=r"pip install '\.\[ray\]'"):
        import_ray()
    code, _, err = cli("run", "sine", "--tier", "smoke", "--executor", "ray", "--results-dir", str(tmp_path))
    assert code == 2 and "not installed" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sine").exists()


def test_ray_options_without_the_ray_executor_are_refused(cli, tmp_path):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--cpus-per-job", "2", "--results-dir", str(tmp_path))
    assert code == 2 and "--cpus-per-job only apply with --executor ray" in err


def test_checkpoint_and_lock_files_are_not_records(tmp_path):
    [record] = execute(plan_run("sine", ["cnp"], [0], "smoke", tmp_path, "cpu", SINE,
                                ExecutionOptions(checkpoint_every=5)), progress=False)
    assert [Path(p).name for p in records.iter_record_paths(tmp_path)] == [Path(record["_path"]).name]
    assert json.loads(Path(record["_path"]).read_text())["executor"]["name"] == "local"
