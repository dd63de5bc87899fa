"""The paths that differ on a GPU, run on the device ``BENCH_TEST_DEVICE`` names (default cpu).

CI runs them on CPU; ``tools/gpu_check.sh`` runs them with ``BENCH_TEST_DEVICE=cuda`` (``-m device``):
placement, CUDA-event timing against a synchronised wall clock, peak memory, task chunks,
no host-device synchronisation inside a meta-gradient, bf16 autocast, the compile refusal, and a
checkpointed run resumed bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace

import pytest
import torch

from bench import records
from bench.algorithms import ALGORITHMS
from bench.config import load_suite
from bench.run.execution import ExecutionOptions
from bench.run.executors import execute
from bench.run.runner import Episodes, plan_run, problem_for
from bench.run.timing import PeakMemory, SegmentTimer
from bench.seeding import generator
from tests.conftest import HAS_OMNIGLOT, read_records
from tests.run.test_checkpoints import SINE, _interrupt_at

pytestmark = pytest.mark.device
needs_omniglot = pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")
FAST = ["--set", "suite.meta_iterations=12", "--set", "suite.val_every=6"]


@pytest.fixture(scope="module")
def device() -> torch.device:
    device = torch.device(os.environ.get("BENCH_TEST_DEVICE", "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        pytest.fail("BENCH_TEST_DEVICE names cuda, but torch finds no CUDA device here")
    return device


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def no_device_sync(device: torch.device):
    """On CUDA, any host-device synchronisation inside raises (torch's sync debug mode)."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def built(name: str, device: torch.device, suite_name: str = "omniglot-5w1s"):
    suite = load_suite(suite_name, tier="smoke")
    episodes = Episodes(suite, device)
    cls = ALGORITHMS.get(name)
    algorithm = cls(cls.Hparams(**suite.algorithms.get(name, {})), problem_for(suite, episodes.source),
                    generator("device-test")).to(device)
    return algorithm, episodes.train(0, 0)


def test_a_run_on_the_device_says_where_and_how_it_was_timed(cli, tmp_path, device):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml,cnp", "--device", str(device), *FAST,
                       "--results-dir", str(tmp_path))
    assert code == 0, err
    cuda = device.type == "cuda"
    for record in read_records(tmp_path):
        assert record["status"] == "completed"
        assert record["environment"]["device"].startswith(device.type)
        assert record["timing"]["method"] == ("cuda_event" if cuda else "perf_counter")
        assert record["memory"]["kind"] == ("cuda_max_allocated" if cuda else "process_peak_rss")
        if cuda:  # cuDNN's fastest kernels are not deterministic, and resume must be bit-for-bit
            assert record["environment"]["cudnn_deterministic"] and not record["environment"]["cudnn_benchmark"]
        assert record["timing"]["meta_train_seconds"] <= record["timing"]["wall_time_s"]


def test_segment_timings_agree_with_a_synchronised_wall_clock(device):
    size = 2048 if device.type == "cuda" else 256
    a = torch.randn(size, size, device=device)
    for _ in range(3):  # warm-up: the first calls choose kernels and allocate
        a @ a
    synchronize(device)
    timer = SegmentTimer(device)
    started = time.perf_counter()
    with no_device_sync(device):  # timing adds no synchronisation inside the timed segments
        for _ in range(4):
            timer.start()
            for _ in range(25):
                a = torch.tanh(a @ a)
            timer.stop()
    synchronize(device)
    wall = time.perf_counter() - started
    segments = timer.segment_seconds()
    assert len(segments) == 4 and all(s > 0 for s in segments)
    assert 0.8 * wall <= timer.seconds() <= wall * 1.001


def test_peak_memory_counts_what_the_run_allocates_on_the_device(device):
    peak = PeakMemory(device)
    before = peak.peak_mb()
    block = torch.ones(64 * 2**20, device=device)  # 256 MB
    block.add_(1)
    assert peak.peak_mb() >= before + 250  # on CPU the resident-set high-water mark, reset when PeakMemory starts
    del block


@needs_omniglot
@pytest.mark.parametrize("name", ["maml", "protonet", "metaoptnet.svm"])
def test_task_chunks_give_the_whole_batch_s_meta_gradient_without_a_device_sync(name, device):
    # float64: in float32 the chunk sizes' convolutions round differently, and max-pooling breaks
    # the resulting near-ties differently (measured: 1% apart at chunk 1, 1e-13 in float64).
    algorithm, batch = built(name, device)
    algorithm.double()
    batch = replace(batch, support_x=batch.support_x.double(), query_x=batch.query_x.double())
    gradients = {}
    for chunk in (None, 1, 2):
        algorithm.task_chunk = chunk
        algorithm.zero_grad(set_to_none=True)
        with no_device_sync(device):
            algorithm.accumulate_meta_gradient(batch)
        gradients[chunk] = [p.grad.clone() for p in algorithm.parameters() if p.grad is not None]
    assert gradients[None] and all(g.device.type == device.type for g in gradients[None])
    for chunk in (1, 2):
        for whole, part in zip(gradients[None], gradients[chunk], strict=True):
            torch.testing.assert_close(part, whole, rtol=1e-9, atol=1e-11)


def test_bf16_autocast_runs_and_is_recorded(cli, tmp_path, device):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "fomaml", "--autocast", "bf16",
                       "--device", str(device), *FAST, "--results-dir", str(tmp_path))
    assert code == 0, err
    [record] = read_records(tmp_path)
    assert record["status"] == "completed" and record["execution"]["autocast"] == "bf16"
    assert torch.isfinite(torch.tensor(record["metric"]["per_task"])).all()


def test_compile_is_refused_where_it_would_drop_second_order_terms(cli, tmp_path, device):
    code, _, err = cli("run", "sine", "--tier", "smoke", "--algorithms", "maml", "--compile", "--device", str(device),
                       "--results-dir", str(tmp_path))
    assert code == 2 and "--compile: maml differentiates through its inner gradient steps" in err
    assert not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize(("suite", "algorithm", "overrides", "stop_at"), [
    ("sine", "maml", SINE, 17),
    pytest.param("omniglot-5w1s", "protonet", ["suite.meta_iterations=6", "suite.val_every=3", "suite.val_tasks=4",
                                               "suite.test_tasks=8"], 4, marks=needs_omniglot)])
def test_a_run_resumed_on_the_device_equals_an_uninterrupted_one(tmp_path, monkeypatch, device, suite, algorithm,
                                                                   overrides, stop_at):
    def plan(directory, every):
        return plan_run(suite, [algorithm], [0], "smoke", tmp_path / directory, str(device), overrides,
                        ExecutionOptions(task_chunk=2, checkpoint_every=every))

    [whole] = execute(plan("whole", 0), progress=False)
    with monkeypatch.context() as patch:
        _interrupt_at(patch, stop_at)
        with pytest.raises(KeyboardInterrupt):
            execute(plan("cut", 2), progress=False)
    [interrupted] = [records.load_record(p) for p in records.iter_record_paths(tmp_path / "cut")]
    assert interrupted["status"] == "interrupted"
    [resumed] = execute(plan("cut", 2), progress=False, resume=True)
    assert resumed["status"] == "completed" and resumed["environment"]["device"].startswith(device.type)
    assert resumed["metric"]["per_task"] == whole["metric"]["per_task"]
    assert [p["train_loss"] for p in resumed["training"]["curve"]] == [p["train_loss"] for p in whole["training"]["curve"]]
