"""Honest timing and peak memory on CPU and GPU.

On CUDA, work is asynchronous: a host clock would time the launches, not the kernels. Each timed
segment is bracketed by CUDA events, and the host waits for the device once, when the total is
read, so timing adds no synchronisation inside the timed loop. On CPU, ``perf_counter`` brackets
the same segments.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch


class SegmentTimer:
    """Sums the durations of several start/stop segments on ``device``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.uses_cuda_events = device.type == "cuda"
        self._open: object | None = None
        self._segments: list[tuple[Any, Any]] = []  # CUDA events, or perf_counter readings
        self._earlier: list[float] = []  # segments timed before a resume, by another process

    def restore(self, seconds: list[float]) -> None:
        """Continue a resumed run's timing: ``seconds`` are its segments before the checkpoint."""
        self._earlier = list(seconds)

    @property
    def method(self) -> str:
        return "cuda_event" if self.uses_cuda_events else "perf_counter"

    def _mark(self) -> object:
        if self.uses_cuda_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    def start(self) -> None:
        if self._open is not None:
            raise RuntimeError("SegmentTimer.start() called twice without stop()")
        self._open = self._mark()

    def stop(self) -> None:
        if self._open is None:
            raise RuntimeError("SegmentTimer.stop() called without start()")
        self._segments.append((self._open, self._mark()))
        self._open = None

    def segment_seconds(self) -> list[float]:
        """The duration of each closed segment; on CUDA this waits for the device once."""
        if self.uses_cuda_events:
            if self._segments:
                self._segments[-1][1].synchronize()
            return [*self._earlier, *(start.elapsed_time(end) / 1000.0 for start, end in self._segments)]
        return [*self._earlier, *(end - start for start, end in self._segments)]

    def seconds(self) -> float:
        """Total of the closed segments; on CUDA this waits for the device once."""
        return sum(self.segment_seconds())


class PeakMemory:
    """Peak memory of one run: CUDA max allocated on a GPU, else the process's peak RSS.

    On Linux the RSS high-water mark is reset at the start of the run (``/proc/self/clear_refs``),
    so a run is not charged for an earlier run's peak in the same process; where that is not
    possible the record says the peak covers the whole process.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "process_peak_rss" if self._reset_rss_peak() else "process_peak_rss_since_start"

    @staticmethod
    def _reset_rss_peak() -> bool:
        # Return freed heap to the OS first, so that memory an earlier step of this process freed
        # but glibc kept (which would count as resident now) does not inflate the new peak.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = _proc_status_mb("VmHWM")
        return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _proc_status_mb(field: str) -> float | None:
    """A memory field of ``/proc/self/status`` in MB (Linux), or None where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def resident_mb() -> float:
    """The process's resident memory now, in MB (NaN where /proc is missing)."""
    current = _proc_status_mb("VmRSS")
    return current if current is not None else math.nan
