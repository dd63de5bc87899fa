from __future__ import annotations

import subprocess
import sys
import time

import torch

from bench.run import timing


def test_cpu_segments_sum_and_exclude_the_gaps():
    timer = timing.SegmentTimer(torch.device("cpu"))
    for _ in range(2):
        timer.start()
        time.sleep(0.02)
        timer.stop()
        time.sleep(0.05)  # between segments: not timed
    assert timer.method == "perf_counter"
    assert 0.04 <= timer.seconds() < 0.09


class FakeEvent:
    """Stands in for torch.cuda.Event: a clock that only moves when the test says so."""

    clock_ms = 0.0
    synchronized = 0

    def __init__(self, enable_timing: bool) -> None:
        assert enable_timing
        self.at: float | None = None

    def record(self, stream=None) -> None:
        self.at = FakeEvent.clock_ms

    def synchronize(self) -> None:
        FakeEvent.synchronized += 1

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.at - self.at


def test_cuda_path_uses_events_and_synchronises_once_when_read(monkeypatch):
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    timer = timing.SegmentTimer(torch.device("cuda"))
    assert timer.method == "cuda_event"
    for duration in (30.0, 70.0):
        timer.start()
        FakeEvent.clock_ms += duration
        timer.stop()
        FakeEvent.clock_ms += 1000.0  # untimed gap
    assert FakeEvent.synchronized == 0  # no sync inside the timed loop
    assert timer.seconds() == 0.1
    assert FakeEvent.synchronized == 1


def test_peak_memory_on_cpu_is_reset_per_run_and_grows_with_allocation():
    # In a fresh process: in this one, memory freed by earlier tests may still be resident and be
    # reused by the allocation, which then does not raise the RSS high-water mark.
    script = """
import torch
from bench.run import timing
first = timing.PeakMemory(torch.device("cpu"))
assert first.kind == "process_peak_rss", first.kind
baseline = first.peak_mb()
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
peak_with_block = first.peak_mb()
assert peak_with_block >= baseline + 60, (baseline, peak_with_block)
del block
second = timing.PeakMemory(torch.device("cpu"))
assert second.peak_mb() < peak_with_block - 30, (second.peak_mb(), peak_with_block)  # not charged again
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]