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
several samples of each candidate, interleaved, and the smallest median wins, so that other load
on the machine cannot lock in a slow path; a larger chunk (more memory) wins only by more than
``MEMORY_MARGIN``, else the smaller one is taken. The choice is cached under
``$BENCH_CACHE_DIR/task-chunk.json`` so that reruns on the same machine take the same path and give
the same bits; a cached choice that now runs much slower than it was measured is measured again;
``bench cache clear task-chunk`` forgets every choice; ``--task-chunk N`` forces a size.

Evaluation chunk: test-time adaptation (first order, no graph kept from one inner step to the
next, 10 steps over hundreds of episodes) has its own fastest chunk, chosen the same way on
evaluation-shaped episodes and recorded as ``eval_chunk``; ``--eval-chunk N`` forces it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from bench.algorithms.base import Algorithm
from bench.datasets.base import cache_dir
from bench.errors import BenchError
from bench.records import utc_now, write_atomic
from bench.run.environment import cpu_flags, environment
from bench.run.timing import SegmentTimer
from bench.tasks import TaskBatch

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bf16": torch.bfloat16}
CHUNK_CACHE_FORMAT = 3  # 3: the smaller chunk within MEMORY_MARGIN; 2: several samples per candidate; 1: one sample
MIN_ROUNDS = 5  # interleaved rounds of timing every remaining candidate chunk; the median decides
MAX_ROUNDS = 25  # ... and at most this many, while the order of the candidates is not clear
MEASURE_BUDGET_S = 30.0  # past the minimum rounds, no more rounds once measuring took this long (near-equal sizes)
ORDER_ALPHA = 0.01  # clear: a sign test over the shared rounds rules out chance at this level (7 of 7 rounds)
MEMORY_MARGIN = 0.05  # a larger chunk (more memory) is taken only where every smaller one is over 5% slower than the best
PRUNE_FACTOR = 2.0  # a candidate whose fastest sample is this much slower than the best median is dropped
VERIFY_ROUNDS = 3  # samples of a cached choice before it is trusted again
STALE_FACTOR = 2.0  # a cached choice running this much slower than when measured is measured again
# The evaluation chunk is measured only when the episodes the measurement adapts are at most this
# share of those the plan adapts (pessimistic: larger chunks are usually faster per episode).
EVAL_MEASURE_SHARE = 0.25


@dataclass(frozen=True)
class ExecutionOptions:
    task_chunk: int | None = None  # None: chosen by measurement (cached per device and configuration)
    # Per algorithm, where ``task_chunk`` is unset: `bench check` repeats the baseline runs' chunks.
    task_chunks: dict[str, int] | None = None
    # The same for test-time adaptation (first order, no graph kept across steps: its fastest
    # chunk is usually not meta-training's).
    eval_chunk: int | None = None
    eval_chunks: dict[str, int] | None = None
    checkpoint_inner_steps: bool = False
    autocast: str | None = None  # "bf16", or None for the parameters' own precision
    compile: bool = False
    threads: int | None = None  # torch threads of a run; None: torch's default (local), --cpus-per-job (Ray)
    checkpoint_every: int | None = None  # meta-iterations between checkpoints; None: at every validation; 0: never

    def check(self, algorithms: list[Any], hparams: dict[str, Any], device: torch.device) -> None:
        """Refuse combinations that cannot run, before any work starts."""
        for name, chunks in (("task", self.task_chunks), ("evaluation", self.eval_chunks)):
            if any(chunk < 1 for chunk in (chunks or {}).values()):
                raise BenchError(f"{name} chunks {chunks}: expected positive numbers of tasks")
        for flag, chunk in (("--task-chunk", self.task_chunk), ("--eval-chunk", self.eval_chunk)):
            if chunk is not None and chunk < 1:
                raise BenchError(f"{flag} {chunk}: expected a positive number of tasks "
                                 "(or leave it unset to measure the fastest)")
        if self.threads is not None and self.threads < 1:
            raise BenchError(f"--threads {self.threads}: expected a positive number of threads")
        if self.checkpoint_every is not None and self.checkpoint_every < 0:
            raise BenchError(f"--checkpoint-every {self.checkpoint_every}: expected 0 (never) or a positive number")
        if self.autocast is not None and self.autocast not in AUTOCAST_DTYPES:
            raise BenchError(f"--autocast {self.autocast!r}: expected one of {', '.join(AUTOCAST_DTYPES)}")
        if self.autocast == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            log.warning("--autocast bf16 on a CPU without native bfloat16 arithmetic (no avx512_bf16 or amx_bf16 "
                        "flag): it runs emulated, far slower than float32 (see `python -m bench perf`'s bf16 row); "
                        "leave --autocast out here")
        if self.compile:
            for algorithm in algorithms:
                reason = compile_unsupported(algorithm, hparams[algorithm.name])
                if reason:
                    raise BenchError(f"--compile: {algorithm.name} {reason}; run it without --compile")

    def as_record(self) -> dict[str, Any]:
        """The options every run of a plan shares (a per-algorithm chunk is recorded as the run's ``task_chunk``)."""
        return {k: v for k, v in asdict(self).items() if k not in ("task_chunks", "eval_chunks")}


def cpu_has_native_bf16() -> bool:
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def recorded_eval_chunk(execution: dict[str, Any]) -> int | None:
    """The evaluation chunk a record's run used: its own entry, or (records from before it was
    chosen apart) the meta-training chunk, which evaluation then shared."""
    return execution["eval_chunk"] if "eval_chunk" in execution else execution.get("task_chunk")


def compile_unsupported(algorithm: type[Algorithm], hparams: Any) -> str | None:
    # Measured with torch 2.14: torch.compile's backward is not differentiable again, and a
    # second-order meta-gradient through it silently loses terms (autograd then reports the
    # parameters as unused), so second-order methods must run eagerly.
    if getattr(hparams, "first_order", True) is False:
        return "differentiates through its inner gradient steps (second order), which torch.compile does not support"
    if getattr(algorithm, "family", "") == "gradient-based" and algorithm.name.endswith(".l2l"):
        return "clones learn2learn modules per task, which torch.compile would recompile for every task"
    return None


def autocast(options: ExecutionOptions, device: torch.device) -> contextlib.AbstractContextManager[Any]:
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


def time_meta_gradient(algorithm: Any, batch: TaskBatch, chunk: int, device: torch.device, options: ExecutionOptions) -> float:
    """Seconds of one meta-gradient on ``batch`` in chunks of ``chunk`` tasks; no update is applied."""
    algorithm.task_chunk = chunk
    algorithm.zero_grad(set_to_none=True)
    timer = SegmentTimer(device)
    timer.start()
    with autocast(options, device):
        algorithm.accumulate_meta_gradient(batch)
    timer.stop()
    algorithm.zero_grad(set_to_none=True)
    return timer.seconds()


def time_evaluation(algorithm: Any, batch: TaskBatch, chunk: int, steps: int, device: torch.device,
                    options: ExecutionOptions) -> float:
    """Seconds of test-time adaptation (``steps`` inner steps) and scoring of ``batch``, ``chunk`` tasks at a time."""
    algorithm.eval_chunk = chunk
    timer = SegmentTimer(device)
    timer.start()
    with autocast(options, device):
        algorithm.evaluate(batch, steps)
    timer.stop()
    return timer.seconds()


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc)))


def measure_task_chunks(algorithm: Any, batch: TaskBatch, device: torch.device, options: ExecutionOptions,
                        rounds: int | None = None, prune: bool = True,
                        time_one: Callable[[int], float] | None = None) -> dict[str, list[float]]:
    """Seconds of one meta-gradient (or of ``time_one(chunk)``) for each candidate chunk size, in interleaved rounds.

    First round, smallest size first: every candidate is warmed up and timed once (a size that
    does not fit in memory ends the round: larger ones need more). Then, round after round, every
    remaining candidate is timed once, in an order that rotates, so that a burst of other load
    lands on one sample of one candidate rather than on all of its samples. From the third round
    on, a candidate whose fastest sample is ``PRUNE_FACTOR`` times the best median is timed no
    more (its samples are kept). After ``MIN_ROUNDS`` rounds the measurement stops as soon as the
    candidate with the smallest median was faster than each remaining candidate in so many of the
    rounds they were timed side by side that a sign test rules out chance (``ORDER_ALPHA``), and
    after ``MAX_ROUNDS`` (or ``MEASURE_BUDGET_S`` of rounds, for sizes too close to tell apart) in
    any case: a quiet machine stops after about 7 rounds; on a loaded one
    the rounds go on until the order is clear (measured with ``python -m bench perf-chunks``).
    ``rounds`` fixes the number of rounds instead. No decision rests on one sample, and the weights
    and their gradients are left as they were."""
    if time_one is None:
        def time_one(chunk: int) -> float:
            return time_meta_gradient(algorithm, batch, chunk, device, options)

    table: list[dict[int, float]] = [{}]  # one {chunk: seconds} per round
    for chunk in chunk_candidates(len(batch)):
        try:
            time_one(chunk)  # warm-up: first calls allocate
            table[0][chunk] = time_one(chunk)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            if not table[0] or not _out_of_memory(exc):
                raise
            algorithm.zero_grad(set_to_none=True)
            log.info("%s: a chunk of %d tasks does not fit in memory; not trying larger ones", algorithm.name, chunk)
            break

    def samples(chunk: int) -> list[float]:
        return [r[chunk] for r in table if chunk in r]

    alive = list(table[0])
    started = time.perf_counter()
    while len(table) < (rounds or MAX_ROUNDS):
        if rounds is None and len(table) >= MIN_ROUNDS and (
                _order_is_clear(table, alive, samples) or time.perf_counter() - started > MEASURE_BUDGET_S):
            break
        shift = len(table) % len(alive)
        table.append({chunk: time_one(chunk) for chunk in alive[shift:] + alive[:shift]})
        if prune and len(table) >= 3:
            lowest = min(statistics.median(samples(c)) for c in alive)
            alive = [c for c in alive if min(samples(c)) <= PRUNE_FACTOR * lowest]
    return {str(chunk): samples(chunk) for chunk in table[0]}


def _sign_test(wins: int, rounds: int) -> float:
    """One-sided p-value of ``wins`` of ``rounds`` under "either is as likely to be faster"."""
    return sum(math.comb(rounds, k) for k in range(wins, rounds + 1)) / 2**rounds


def _order_is_clear(table: list[dict[int, float]], alive: list[int], samples: Callable[[int], list[float]]) -> bool:
    """The leader by median was faster than every other remaining candidate in so many of the rounds
    they were timed side by side that chance is ruled out (a sign test at ``ORDER_ALPHA``)."""
    leader = min(alive, key=lambda c: statistics.median(samples(c)))
    for other in alive:
        shared = [(r[leader], r[other]) for r in table if leader in r and other in r]
        if other != leader and _sign_test(sum(a < b for a, b in shared), len(shared)) >= ORDER_ALPHA:
            return False
    return True


def fastest(samples: dict[str, list[float]]) -> int:
    """The smallest chunk whose median time is within ``MEMORY_MARGIN`` of the smallest median.

    A larger chunk keeps more tasks' graphs alive at once (peak memory grows with the chunk), so it
    has to be clearly faster to be worth it: first-order MAML at 5 steps on Omniglot measured chunk 4
    1% faster than chunk 2 at twice its memory."""
    medians = sorted((int(chunk), statistics.median(values)) for chunk, values in samples.items())
    best = min(median for _, median in medians)
    return next(chunk for chunk, median in medians if median <= (1 + MEMORY_MARGIN) * best)


def _cache_path() -> Path:
    return cache_dir() / "task-chunk.json"


def _configuration_key(algorithm: Any, batch: TaskBatch, device: torch.device, options: ExecutionOptions,
                       extra: dict[str, Any] | None = None) -> str:
    env = environment(device)
    suite = algorithm.problem.suite
    described = {
        "format": CHUNK_CACHE_FORMAT,
        "device": env.get("device_name"), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "algorithm": algorithm.name, "hparams": algorithm.hparams.model_dump(mode="json"),
        "model": suite.model.model_dump(mode="json"), "batch_norm": suite.batch_norm,
        "shapes": [list(t.shape) for t in batch.tensors()], "dtype": str(next(algorithm.parameters(), torch.empty(0)).dtype),
        "checkpoint_inner_steps": options.checkpoint_inner_steps, "autocast": options.autocast, "compile": options.compile,
        **(extra or {}),  # nothing for meta-training's chunk: its keys stay those cached before
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:20]


def read_chunk_cache(path: Path | None = None) -> dict[str, Any]:
    """The cache's entries as stored ({} when it is missing or unreadable)."""
    path = path or _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return cache if isinstance(cache, dict) else {}


def _usable(entry: Any, n_tasks: int) -> bool:
    """A cache entry this bench wrote for a batch of ``n_tasks``: a candidate chunk and its timings."""
    if not isinstance(entry, dict) or entry.get("task_chunk") not in chunk_candidates(n_tasks):
        return False
    samples = entry.get("seconds")
    return (isinstance(samples, dict) and str(entry["task_chunk"]) in samples
            and all(isinstance(v, list) and v and all(isinstance(x, (int, float)) and 0 < x < math.inf for x in v)
                    for v in samples.values()))


def _store(path: Path, key: str, entry: dict[str, Any]) -> None:
    try:
        # Read, add and write under a lock: runs in other processes may be storing their choices too.
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(path.with_name(path.name + ".lock"), timeout=60):
            cache = read_chunk_cache(path)
            cache[key] = entry
            write_atomic(path, json.dumps(cache, indent=1) + "\n")
    except (OSError, Timeout) as exc:  # a read-only or busy cache costs a re-measurement next time, nothing else
        log.warning("could not store the task-chunk choice in %s: %s", path, exc)


def _medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {chunk: statistics.median(values) for chunk, values in samples.items()}


@dataclass(frozen=True)
class _ChunkKind:
    """What a chunk size is chosen for: meta-training's meta-gradient, or test-time adaptation."""

    field: str  # the record's key and the algorithm's attribute: task_chunk | eval_chunk
    what: str  # for messages
    time_one: Callable[[int], float]
    option: int | None  # the chunk asked for on the command line
    per_algorithm: dict[str, int] | None  # the baseline's, under `bench check`
    key: dict[str, Any]  # what else the measurement depends on


def choose_task_chunk(algorithm: Any, batch: TaskBatch, device: torch.device, options: ExecutionOptions) -> dict[str, Any]:
    """Set ``algorithm.task_chunk`` (set, cached or measured) and return what the record says about it.

    A cached choice is checked first: its chunk is timed again (``VERIFY_ROUNDS`` samples after a
    warm-up) and if even the fastest of them is more than ``STALE_FACTOR`` times the stored median,
    the machine or its load has changed since the measurement and every candidate is measured again."""
    if not (hasattr(algorithm, "chunks_tasks") and algorithm.chunks_tasks()):
        return {"task_chunk": None, "task_chunk_choice": "not chunked (all tasks of a meta-batch together)"}
    kind = _ChunkKind("task_chunk", "task chunk",
                      lambda chunk: time_meta_gradient(algorithm, batch, chunk, device, options),
                      options.task_chunk, options.task_chunks, {})
    return _choose(kind, algorithm, batch, device, options)


def choose_eval_chunk(algorithm: Any, batch: TaskBatch, steps: int, device: torch.device,
                      options: ExecutionOptions, planned_episodes: int | None = None) -> dict[str, Any]:
    """Set ``algorithm.eval_chunk``, the tasks adapted together at test time, as ``choose_task_chunk``
    does for meta-training (on ``batch``, evaluation-shaped episodes, at ``steps`` inner steps).

    Each candidate is timed on its own number of episodes, one call, and scored per episode: an
    evaluation is that call repeated, and the measurement then costs about two calls of the
    largest size per round instead of one full batch per candidate.

    A measurement must pay for itself: with ``planned_episodes`` (the episodes this algorithm's
    runs of the plan will adapt), it is made only if the episodes it adapts (``1 + MIN_ROUNDS``
    rounds of every candidate on its own number of episodes) are at most ``EVAL_MEASURE_SHARE`` of
    the planned ones; otherwise evaluation keeps the task chunk (nothing is cached). Counting
    episodes, not seconds, keeps the decision a function of the suite and the plan, never of a
    noisy moment."""
    if not (hasattr(algorithm, "chunks_evaluation") and algorithm.chunks_evaluation()):
        return {}
    fallback = min(algorithm.task_chunk or len(batch), len(batch))
    measuring = (1 + MIN_ROUNDS) * sum(chunk_candidates(len(batch)))
    if (options.eval_chunk is None and algorithm.name not in (options.eval_chunks or {}) and planned_episodes is not None
            and measuring > EVAL_MEASURE_SHARE * planned_episodes
            and _configuration_key(algorithm, batch, device, options, _eval_key(steps)) not in read_chunk_cache()):
        algorithm.eval_chunk = fallback
        return {"eval_chunk": fallback, "eval_chunk_choice": (
            f"the task chunk: measuring would adapt about {measuring} episodes, more than {EVAL_MEASURE_SHARE:.0%} "
            f"of the {planned_episodes} the plan adapts with {algorithm.name}")}
    kind = _ChunkKind("eval_chunk", "evaluation chunk",
                      lambda chunk: time_evaluation(algorithm, batch.slice(0, chunk), chunk, steps, device, options) / chunk,
                      options.eval_chunk, options.eval_chunks, _eval_key(steps))
    return _choose(kind, algorithm, batch, device, options)


def _eval_key(steps: int) -> dict[str, Any]:
    return {"for": "evaluation", "evaluation_steps": steps}


def _choose(kind: _ChunkKind, algorithm: Any, batch: TaskBatch, device: torch.device,
            options: ExecutionOptions) -> dict[str, Any]:
    field, choice = kind.field, f"{kind.field}_choice"

    def use(chunk: int) -> int:
        setattr(algorithm, field, chunk)
        return chunk

    if kind.option is not None:
        return {field: use(min(kind.option, len(batch))), choice: "set"}
    per_algorithm = kind.per_algorithm or {}
    if algorithm.name in per_algorithm:
        return {field: use(min(per_algorithm[algorithm.name], len(batch))), choice: "set to the baseline's"}
    key = _configuration_key(algorithm, batch, device, options, kind.key)
    path = _cache_path()
    cached = read_chunk_cache(path).get(key)
    why = "measured"
    if cached is not None and not _usable(cached, len(batch)):
        log.warning("%s: ignoring the unusable %s cache entry %s in %s; measuring", algorithm.name, kind.what, key, path)
    elif cached is not None:
        chunk = cached["task_chunk"]
        kind.time_one(chunk)  # warm-up
        # The fastest of a few samples: one slow call (an allocation, a burst of other load) is no evidence.
        now = min(kind.time_one(chunk) for _ in range(VERIFY_ROUNDS))
        then = statistics.median(cached["seconds"][str(chunk)])
        if now <= STALE_FACTOR * then:
            return {field: use(chunk), choice: "cached measurement",
                    f"{field}_seconds": _medians(cached["seconds"]), f"{field}_key": key,
                    f"{field}_check": {"seconds": now, "ratio_to_measured": now / then}}
        why = f"measured again: the cached chunk {chunk} ran {now / then:.1f}x slower than when it was measured"
        log.warning("%s: %s", algorithm.name, why)
    samples = measure_task_chunks(algorithm, batch, device, options, time_one=kind.time_one)
    best = use(fastest(samples))
    medians = _medians(samples)
    log.info("%s: %s %d chosen by measurement (median of up to %d interleaved samples: %s)", algorithm.name, kind.what,
             best, max(len(v) for v in samples.values()), ", ".join(f"{c}: {s * 1000:.1f} ms" for c, s in medians.items()))
    _store(path, key, {"task_chunk": best, "seconds": samples, "measured_at": utc_now(), "pid": os.getpid(),
                       "algorithm": algorithm.name, "suite": algorithm.problem.suite.name, "for": field})
    return {field: best, choice: why, f"{field}_seconds": medians, f"{field}_key": key}


def clear_chunk_cache() -> bool:
    """Remove the task-chunk cache (every later run measures again); False if there was none."""
    path = _cache_path()
    with FileLock(path.with_name(path.name + ".lock"), timeout=60):
        existed = path.is_file()
        path.unlink(missing_ok=True)
    return existed
