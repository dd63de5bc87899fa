"""Execution options: the measured task chunk and its cache, refusals, autocast, compile, no device syncs."""

from __future__ import annotations

import json

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.errors import BenchError
from bench.run.execution import ExecutionOptions, choose_eval_chunk, choose_task_chunk, chunk_candidates
from bench.run.runner import Episodes, problem_for
from bench.seeding import generator
from tests.conftest import read_records


def build(name: str, suite_name: str = "sine", **hparams):
    suite = load_suite(suite_name, tier="smoke")
    episodes = Episodes(suite, torch.device("cpu"))
    algorithm_cls = ALGORITHMS.get(name)
    hparams = {**suite.algorithms.get(name, {}), **hparams}
    algorithm = algorithm_cls(algorithm_cls.Hparams(**hparams), problem_for(suite, episodes.source), generator("execution"))
    return algorithm, episodes.train(0, 0)


def test_chunk_candidates_cover_one_to_the_whole_batch():
    assert chunk_candidates(1) == [1]
    assert chunk_candidates(25) == [1, 2, 4, 8, 16, 25]
    assert chunk_candidates(32) == [1, 2, 4, 8, 16, 32]


def test_task_chunk_is_measured_once_then_read_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("maml")
    before = {k: v.clone() for k, v in algorithm.state_dict().items()}
    first = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert first["task_chunk_choice"] == "measured"
    assert first["task_chunk"] in chunk_candidates(len(batch))
    assert str(first["task_chunk"]) in first["task_chunk_seconds"]
    # measuring computes meta-gradients but leaves the weights and their gradients as they were
    assert all(torch.equal(before[k], v) for k, v in algorithm.state_dict().items())
    assert all(p.grad is None for p in algorithm.parameters())
    # From here the timings are scripted as measured: other load on the machine must not make the
    # cached choice look stale (that re-measuring has tests of its own, below).
    measured = first["task_chunk_seconds"]
    scripted_timer(monkeypatch, {c: measured.get(str(c), max(measured.values())) for c in chunk_candidates(len(batch))})
    again, _ = build("maml")
    second = choose_task_chunk(again, batch, torch.device("cpu"), ExecutionOptions())
    assert second["task_chunk_choice"] == "cached measurement"
    assert second["task_chunk"] == first["task_chunk"] == again.task_chunk
    # another configuration (more inner steps) is measured anew
    other, _ = build("maml", inner_steps=2)
    assert choose_task_chunk(other, batch, torch.device("cpu"), ExecutionOptions())["task_chunk_choice"] == "measured"
    assert len(json.loads((tmp_path / "task-chunk.json").read_text())) == 2


def test_a_damaged_chunk_cache_is_measured_over(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    (tmp_path / "task-chunk.json").write_text("{not json")
    algorithm, batch = build("fomaml")
    assert choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())["task_chunk_choice"] == "measured"
    json.loads((tmp_path / "task-chunk.json").read_text())


def test_a_set_task_chunk_is_used_and_methods_without_chunks_say_so():
    algorithm, batch = build("maml")
    assert choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions(task_chunk=3)) == {
        "task_chunk": 3, "task_chunk_choice": "set"}
    assert algorithm.task_chunk == 3
    reference, batch = build("maml.l2l")
    assert choose_task_chunk(reference, batch, torch.device("cpu"), ExecutionOptions())["task_chunk"] is None


def test_the_evaluation_chunk_is_measured_apart_from_the_task_chunk_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("maml")
    suite = algorithm.problem.suite
    sample = Episodes(suite, torch.device("cpu")).evaluation_sample()
    assert len(sample) == min(suite.test_tasks, 200) and sample.support_x.shape[1:] == batch.support_x.shape[1:]
    training = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    first = choose_eval_chunk(algorithm, sample, 3, torch.device("cpu"), ExecutionOptions())
    assert first["eval_chunk_choice"] == "measured" and first["eval_chunk"] == algorithm.eval_chunk
    assert first["eval_chunk"] in chunk_candidates(len(sample)) and first["eval_chunk_key"] != training["task_chunk_key"]
    assert algorithm.task_chunk == training["task_chunk"], "measuring evaluation leaves the training chunk alone"
    assert len(json.loads((tmp_path / "task-chunk.json").read_text())) == 2
    assert choose_eval_chunk(algorithm, sample, 3, torch.device("cpu"), ExecutionOptions(eval_chunk=7)) == {
        "eval_chunk": 7, "eval_chunk_choice": "set"}
    assert choose_eval_chunk(algorithm, sample, 3, torch.device("cpu"), ExecutionOptions(eval_chunks={"maml": 9})) == {
        "eval_chunk": 9, "eval_chunk_choice": "set to the baseline's"}
    for name in ("maml.l2l", "protonet", "cnp"):  # their evaluation is their own: nothing to choose
        other, _ = build(name) if name != "protonet" else build(name, "omniglot-5w1s")
        assert choose_eval_chunk(other, sample, 3, torch.device("cpu"), ExecutionOptions()) == {}


def test_the_evaluation_chunk_is_measured_only_when_that_pays_for_itself(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("fomaml")
    sample = Episodes(algorithm.problem.suite, torch.device("cpu")).evaluation_sample()
    algorithm.task_chunk = 5
    few = choose_eval_chunk(algorithm, sample, 3, torch.device("cpu"), ExecutionOptions(), planned_episodes=100)
    assert few["eval_chunk"] == 5 == algorithm.eval_chunk
    assert few["eval_chunk_choice"].startswith("the task chunk: measuring would adapt about ")
    assert not (tmp_path / "task-chunk.json").exists(), "a choice not measured is not cached"
    many = choose_eval_chunk(algorithm, sample, 3, torch.device("cpu"), ExecutionOptions(), planned_episodes=10**9)
    assert many["eval_chunk_choice"] == "measured"
    # once measured, the cached choice serves every later run, however few episodes it adapts
    again = choose_eval_chunk(algorithm, sample, 3, torch.device("cpu"), ExecutionOptions(), planned_episodes=100)
    assert again["eval_chunk_choice"] in ("cached measurement", "measured again") or \
        again["eval_chunk_choice"].startswith("measured again")


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile"])
def test_test_time_adaptation_gives_the_same_scores_at_every_evaluation_chunk(name):
    algorithm, _ = build(name)
    sample = Episodes(algorithm.problem.suite, torch.device("cpu")).evaluation_sample()
    scores = {}
    for chunk in (1, 4, len(sample)):
        algorithm.eval_chunk = chunk
        scores[chunk] = algorithm.evaluate(sample, 5)
    for chunk, values in scores.items():
        torch.testing.assert_close(values, scores[1], rtol=1e-4, atol=1e-5, msg=f"chunk {chunk}")


def test_options_that_cannot_run_are_refused_before_any_work(cli, tmp_path):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml", "--compile", "--results-dir", str(tmp_path))
    assert code == 2
    assert "--compile: maml differentiates through its inner gradient steps" in err
    assert not list(tmp_path.rglob("*.json"))
    with pytest.raises(SystemExit):
        cli("run", "sine", "--task-chunk", "0")
    with pytest.raises(BenchError, match="positive"):
        ExecutionOptions(task_chunk=0).check([], {}, torch.device("cpu"))


def test_bf16_autocast_on_a_cpu_without_native_bf16_is_warned_about(monkeypatch, caplog):
    import bench.run.execution

    monkeypatch.setattr(bench.run.execution, "cpu_flags", lambda: {"avx2", "fma"})
    ExecutionOptions(autocast="bf16").check([], {}, torch.device("cpu"))
    assert "runs emulated" in caplog.text
    caplog.clear()
    monkeypatch.setattr(bench.run.execution, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    ExecutionOptions(autocast="bf16").check([], {}, torch.device("cpu"))
    assert "runs emulated" not in caplog.text


def test_execution_options_are_recorded(cli, tmp_path):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml,maml.l2l",
                       "--task-chunk", "2", "--eval-chunk", "5", "--checkpoint-inner-steps", "--autocast", "bf16",
                       "--results-dir", str(tmp_path))
    assert code == 0, err
    executions = {r["algorithm"]["name"]: r["execution"] for r in read_records(tmp_path)}
    assert executions["maml"] == {"task_chunk": 2, "eval_chunk": 5, "checkpoint_inner_steps": True, "autocast": "bf16",
                                  "compile": False, "threads": None, "checkpoint_every": None,
                                  "task_chunk_choice": "set", "eval_chunk_choice": "set"}
    assert executions["maml.l2l"]["task_chunk"] is None and executions["maml.l2l"]["checkpoint_inner_steps"] is None


@pytest.mark.slow
def test_compiled_first_order_run_matches_the_eager_run(cli, tmp_path):
    """torch.compile (inductor, CPU here) changes rounding at most: the same episodes give close scores."""
    args = ["run", "sine", "--tier", "smoke", "--algorithms", "fomaml", "--task-chunk", "4",
            "--set", "suite.meta_iterations=20", "--set", "suite.val_every=20"]
    assert cli(*args, "--results-dir", str(tmp_path / "eager"))[0] == 0
    code, _, err = cli(*args, "--compile", "--results-dir", str(tmp_path / "compiled"))
    assert code == 0, err
    (eager,), (compiled,) = read_records(tmp_path / "eager"), read_records(tmp_path / "compiled")
    assert compiled["execution"]["compile"] is True
    assert compiled["metric"]["mean"] == pytest.approx(eager["metric"]["mean"], rel=1e-3)


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "reptile"])
def test_no_host_device_sync_inside_the_inner_loop(name, monkeypatch):
    """On CUDA these calls would block the host until the device is done; none may run in a meta-gradient."""
    algorithm, batch = build(name)
    algorithm.task_chunk = 2

    def forbidden(*args, **kwargs):
        raise AssertionError("host-device synchronisation inside the inner loop")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, method, forbidden)
    algorithm.accumulate_meta_gradient(batch)
    monkeypatch.undo()
    assert all(p.grad is not None for p in algorithm.backbone.parameters())


def test_an_algorithm_that_replaces_meta_train_step_is_not_chunked():
    """A plugin with its own meta_train_step and no meta_loss (and no parameters) runs as written."""
    from bench.algorithms import Algorithm

    class Zero(Algorithm):
        family = "baseline"

        def meta_train_step(self, batch, iteration):
            return torch.zeros(())

    algorithm, batch = build("maml")
    zero = Zero(algorithm.hparams, algorithm.problem, generator("zero"))
    assert not Zero.chunks_tasks() and algorithm.chunks_tasks()
    assert choose_task_chunk(zero, batch, torch.device("cpu"), ExecutionOptions())["task_chunk"] is None


def scripted_timer(monkeypatch, cost, burst=lambda chunk, nth: 1.0):
    """Replace the timer of one meta-gradient by ``cost[chunk]`` seconds times ``burst(chunk, nth)``
    (other load on the machine; nth counts that chunk's calls from 1); returns the chunks timed, in order."""
    import bench.run.execution as execution

    calls: list[int] = []

    def fake(algorithm, batch, chunk, device, options):
        calls.append(chunk)
        return cost[chunk] * burst(chunk, calls.count(chunk))

    monkeypatch.setattr(execution, "time_meta_gradient", fake)
    return calls


COST = {1: 0.050, 2: 0.027, 4: 0.014, 8: 0.008, 16: 0.0045, 25: 0.0025}  # measured on sine's MAML


def test_one_burst_of_load_cannot_choose_a_slow_chunk(monkeypatch):
    from bench.run.execution import fastest, measure_task_chunks

    algorithm, batch = build("maml")
    # A burst on chunk 2's first sample (its first call is the warm-up): the rule before stopped
    # there and chose chunk 1, 20x slower than the best.
    scripted_timer(monkeypatch, COST, burst=lambda chunk, nth: 40.0 if (chunk, nth) == (2, 2) else 1.0)
    samples = measure_task_chunks(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert fastest(samples) == 25
    assert set(samples) == {"1", "2", "4", "8", "16", "25"}


def test_a_larger_chunk_must_be_clearly_faster_to_be_chosen():
    from bench.run.execution import MEMORY_MARGIN, fastest

    near = 1 - MEMORY_MARGIN / 2
    # First-order MAML, 5 steps, Omniglot: chunk 4 was 1% faster than chunk 2 at twice its memory.
    assert fastest({"1": [3.85] * 5, "2": [2.81] * 5, "4": [2.78] * 5}) == 2
    assert fastest({"1": [1.0] * 5, "2": [near] * 5}) == 1
    clear = 1 - 2 * MEMORY_MARGIN
    assert fastest({"1": [1.0] * 5, "2": [clear] * 5, "4": [clear * near] * 5}) == 2
    assert fastest({"1": [1.0] * 5, "2": [clear] * 5, "4": [clear * clear] * 5}) == 4
    assert fastest({"1": [0.5] * 5, "2": [1.0] * 5}) == 1  # a smaller chunk that is fastest outright


def test_a_quiet_machine_stops_when_the_order_is_clear_and_a_noisy_one_goes_on(monkeypatch):
    from bench.run.execution import MAX_ROUNDS, fastest, measure_task_chunks

    algorithm, batch = build("maml")
    scripted_timer(monkeypatch, COST)
    quiet = measure_task_chunks(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert fastest(quiet) == 25 and len(quiet["25"]) == 7  # 7 of 7 wins: a sign test's p < 0.01
    assert len(quiet["1"]) < 5  # far slower candidates are dropped early
    # A burst on every third sample of chunk 25: it still wins two rounds in three, never clearly
    # enough for the sign test, so every round is taken, and the median still picks it.
    scripted_timer(monkeypatch, COST, burst=lambda chunk, nth: 4.0 if chunk == 25 and nth % 3 == 0 else 1.0)
    noisy = measure_task_chunks(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert len(noisy["25"]) == MAX_ROUNDS and fastest(noisy) == 25


def test_a_cached_choice_that_now_runs_much_slower_is_measured_again(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("maml")
    first = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    path = tmp_path / "task-chunk.json"
    cache = json.loads(path.read_text())
    entry = cache[first["task_chunk_key"]]
    entry["seconds"] = {k: [1e-7] * len(v) for k, v in entry["seconds"].items()}  # "measured" far faster than possible
    path.write_text(json.dumps(cache))
    again = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert again["task_chunk_choice"].startswith("measured again: the cached chunk")
    assert json.loads(path.read_text())[first["task_chunk_key"]]["seconds"] != entry["seconds"]
    third = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert third["task_chunk_choice"] == "cached measurement" and third["task_chunk_check"]["ratio_to_measured"] > 0


@pytest.mark.parametrize("bad", [-3, 0, 7, "4", None, 1.5])
def test_an_impossible_cached_chunk_is_not_trusted(bad, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("maml")
    key = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())["task_chunk_key"]
    path = tmp_path / "task-chunk.json"
    cache = json.loads(path.read_text())
    cache[key]["task_chunk"] = bad
    path.write_text(json.dumps(cache))
    chosen = choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    assert chosen["task_chunk_choice"] == "measured" and chosen["task_chunk"] in chunk_candidates(len(batch))


def test_cache_show_and_clear(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path))
    algorithm, batch = build("maml")
    choose_task_chunk(algorithm, batch, torch.device("cpu"), ExecutionOptions())
    (tmp_path / "omniglot-0123456789abcdef0123.pt").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not ours")  # a shared cache directory: other files stay
    code, out, _ = cli("cache", "show")
    assert code == 0 and "sine maml: chunk" in out and "omniglot-0123456789abcdef0123.pt" in out
    assert cli("cache", "clear")[0] == 0
    assert not (tmp_path / "task-chunk.json").exists() and (tmp_path / "omniglot-0123456789abcdef0123.pt").exists()
    code, out, _ = cli("cache", "clear", "all")
    assert code == 0 and "removed 1 prepared data file(s)" in out
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["notes.txt"]
