"""How a run executes, apart from what it computes: task chunking, checkpointing, autocast, compile.

None of these options changes the protocol or the mathematics of a method; they change speed and
memory, and (task chunk, autocast, compile) floating-point rounding. Every run records the options
it ran with under ``execution``, so a number can be reproduced with the same ones.

Task chunk: the gradient-based methods adapt ``task_chunk`` tasks of a meta-batch together (one
grouped convolution per layer for the chunk, per-task batch-norm statistics) and take the backward
pass chunk by chunk, so only one chunk's graph is alive at a time. Which size is fastest depends on
the device and the configuration: on this 2-core CPU per-task or small chunks beat one grouped call
over 32 Omniglot tasks by 2x, while a tiny MLP wants every task at once. Left unset, the size is
chosen by timing the candidates on the run's first meta-batch, once per (device, configuration):
the choice is cached under ``$BENCH_CACHE_DIR/task-chunk.json`` so that reruns on the same machine
take the same path and give the same bits; ``--task-chunk N`` forces a size.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch
from filelock import FileLock, Timeout

from bench.errors import BenchError
from bench.records import utc_now, write_atomic
from bench.tasks import TaskBatch
from bench.timing import SegmentTimer

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}
CHUNK_CACHE_FORMAT = 1
SLOWER_THAN_BEST_TO_STOP = 1.3  # candidates are timed smallest first; stop once one is this much slower than the best


@dataclass(frozen=True)
class ExecutionOptions:
    task_chunk: int | None = None  # None: chosen by measurement (cached per device and configuration)
    # Per algorithm, where ``task_chunk`` is unset: `bench check` repeats the baseline runs' chunks.
    task_chunks: dict[str, int] | None = None
    checkpoint_inner_steps: bool = False
    autocast: str | None = None  # "bf16", or None for the parameters' own precision
    compile: bool = False
    threads: int | None = None  # torch threads of a run; None: torch's default (local), --cpus-per-job (Ray)
    checkpoint_every: int | None = None  # meta-iterations between checkpoints; None: at every validation; 0: never

    def check(self, algorithms: list[Any], hparams: dict[str, Any], device: torch.device) -> None:
        """Refuse combinations that cannot run, before any work starts."""
        if any(chunk < 1 for chunk in (self.task_chunks or {}).values()):
            raise BenchError(f"task chunks {self.task_chunks}: expected positive numbers of tasks")
        if self.task_chunk is not None and self.task_chunk < 1:
            raise BenchError(f"--task-chunk {self.task_chunk}: expected a positive number of tasks "
                             "(or leave it unset to measure the fastest)")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads {self.threads}: expected a positive number of threads")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise BenchError(f"--checkpoint-every {self.checkpoint_every}: expected 0 (never) or a positive number")
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise BenchError(f"--autocast {self.autocast!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")
        if self.compile:
            for algorithm in algorithms:
                reason = compile_unsupported(algorithm, hparams[algorithm.name])
                if reason:
                    raise BenchError(f"--compile: {algorithm.name} {reason}; run it without --compile")

    def as_record(self) -> dict[str, Any]:
        """The options every run of a plan shares (a per-algorithm chunk is recorded as the run's ``task_chunk``)."""
        return {k: v for k, v in asdict(self).items() if k != "task_chunks"}


def compile_unsupported(algorithm: type, hparams: Any) -> str | None:
    # Measured with torch 2.14: torch.compile's backward is not differentiable again, and a
    # second-order meta-gradient through it silently loses terms (autograd then reports the
    # parameters as unused), so second-order methods must run eagerly.
    if getattr(hparams, "first_order", True) is False:
        return "differentiates through its inner gradient steps (second order), which torch.compile does not support"
    if getattr(algorithm, "family", "") == "gradient-based" and algorithm.name.endswith(".l2l"):
        return "clones learn2learn modules per task, which torch.compile would recompile for every task"
    return None


def autocast(options: ExecutionOptions, device: torch.device):
    """The autocast context of the run (a no-op without ``--autocast``)."""
    if options.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[options.autocast])


def apply_compile(algorithm: torch.nn.Module) -> None:
    """Compile the backbone's functional forward (the compute of every method) with torch.compile."""
    backbone = getattr(algorithm, "backbone", None)
    if backbone is None:
        raise BenchError(f"--compile: {algorithm.name} has no backbone to compile")
    for method in ("features", "functional", "head"):
        if hasattr(backbone, method):
            setattr(backbone, method, torch.compile(getattr(backbone, method), dynamic=False))


def chunk_candidates(n_tasks: int) -> list[int]:
    sizes, size = [], 1
    while size < n_tasks:
        sizes.append(size)
        size *= 2
    return [*sizes, n_tasks]


def time_task_chunk(algorithm: Any, batch: TaskBatch, chunk: int, device: torch.device, options: ExecutionOptions) -> float:
    """Seconds of one meta-gradient on ``batch`` in chunks of ``chunk`` tasks (after one warm-up); no update is applied."""
    algorithm.task_chunk = chunk
    timer = SegmentTimer(device)
    for timed in (False, True):
        algorithm.zero_grad(set_to_none=True)
        if timed:
            timer.start()
        with autocast(options, device):
            algorithm.accumulate_meta_gradient(batch)
        if timed:
            timer.stop()
    algorithm.zero_grad(set_to_none=True)
    return timer.seconds()


def _cache_path():
    from bench.datasets.base import cache_dir

    return cache_dir() / "task-chunk.json"


def _configuration_key(algorithm: Any, batch: TaskBatch, device: torch.device, options: ExecutionOptions) -> str:
    from bench.environment import environment

    env = environment(device)
    suite = algorithm.problem.suite
    described = {
        "format": CHUNK_CACHE_FORMAT,
        "device": env.get("device_name"), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "algorithm": algorithm.name, "hparams": algorithm.hparams.model_dump(mode="json"),
        "model": suite.model.model_dump(mode="json"), "batch_norm": suite.batch_norm,
        "shapes": [list(t.shape) for t in batch.tensors()], "dtype": str(next(algorithm.parameters(), torch.empty(0)).dtype),
        "checkpoint_inner_steps": options.checkpoint_inner_steps, "autocast": options.autocast, "compile": options.compile,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read_cache(path) -> dict[str, Any]:
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def choose_task_chunk(algorithm: Any, batch: TaskBatch, device: torch.device, options: ExecutionOptions) -> dict[str, Any]:
    """Set ``algorithm.task_chunk`` (set, cached or measured) and return what the record says about it."""
    if not (hasattr(algorithm, "chunks_tasks") and algorithm.chunks_tasks()):
        return {"task_chunk": None, "task_chunk_choice": "not chunked (all tasks of a meta-batch together)"}
    if options.task_chunk is not None:
        algorithm.task_chunk = min(options.task_chunk, len(batch))
        return {"task_chunk": algorithm.task_chunk, "task_chunk_choice": "set"}
    if algorithm.name in (options.task_chunks or {}):
        algorithm.task_chunk = min(options.task_chunks[algorithm.name], len(batch))
        return {"task_chunk": algorithm.task_chunk, "task_chunk_choice": "set to the baseline's"}
    key = _configuration_key(algorithm, batch, device, options)
    path = _cache_path()
    cache = _read_cache(path)
    if isinstance(cache.get(key), dict) and isinstance(cache[key].get("task_chunk"), int):
        algorithm.task_chunk = cache[key]["task_chunk"]
        return {"task_chunk": algorithm.task_chunk, "task_chunk_choice": "cached measurement",
                "task_chunk_seconds": cache[key].get("seconds"), "task_chunk_key": key}
    seconds: dict[str, float] = {}
    best = None
    for chunk in chunk_candidates(len(batch)):
        seconds[str(chunk)] = time_task_chunk(algorithm, batch, chunk, device, options)
        if best is None or seconds[str(chunk)] < seconds[str(best)]:
            best = chunk
        elif seconds[str(chunk)] > SLOWER_THAN_BEST_TO_STOP * seconds[str(best)]:
            break
    algorithm.task_chunk = best
    log.info("%s: task chunk %d chosen by measurement (%s)", algorithm.name, best,
             ", ".join(f"{c}: {s * 1000:.0f} ms" for c, s in seconds.items()))
    entry = {"task_chunk": best, "seconds": seconds, "measured_at": utc_now(), "pid": os.getpid()}
    try:
        # Read, add and write under a lock: runs in other processes may be storing their choices too.
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(path.name + ".lock"), timeout=60):
            cache = _read_cache(path)
            cache[key] = entry
            write_atomic(path, json.dumps(cache, indent=1) + "\n")
    except (OSError, Timeout) as exc:  # a read-only or busy cache costs a re-measurement next time, nothing else
        log.warning("could not store the task-chunk choice in %s: %s", path, exc)
    return {"task_chunk": best, "task_chunk_choice": "measured", "task_chunk_seconds": seconds, "task_chunk_key": key}
