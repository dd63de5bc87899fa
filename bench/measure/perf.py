"""``bench perf``: our gradient-based core against learn2learn, measured side by side in one run.

The configuration is the Omniglot 5-way 1-shot paper tier: Conv-4 with 64 filters and max-pool,
transductive batch norm, meta-batch 32, 15 queries per class. The learn2learn reference is what its
examples do: ``l2l.algorithms.MAML`` around a plain ``nn.Sequential`` Conv-4, one task at a time
(``clone``, ``adapt``, query loss, ``backward``), from the same initial weights and on the same
episodes as ours. Timings of the implementations being compared are interleaved round by round in
this process (medians over rounds; two runs of one benchmark on our 2-core machines differed by up
to 25%, so only ratios measured together mean much). Peak memory is the extra resident memory of a
fresh process during two meta-training steps (on CUDA: max allocated above what was allocated
before, in this process), so no implementation is charged for another's. Gradient agreement is
measured in float64 on the first tasks of the same batch.
Test-time adaptation (the protocol's inner steps on one evaluation call's worth of validation
episodes, then the query scores) is compared the same way: learn2learn's clone/adapt loop, ours
one episode at a time, at the measured evaluation chunk, and all episodes in one grouped call.
"""

from __future__ import annotations

import copy
import json
import logging
import multiprocessing
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from bench.algorithms import ALGORITHMS, Algorithm
from bench.algorithms.gradient import per_task
from bench.algorithms.l2l_reference import import_learn2learn, learn2learn_available
from bench.config import Conv4Model, Suite, load_suite
from bench.datasets import check_available
from bench.errors import BenchError
from bench.records import write_atomic
from bench.run.environment import environment
from bench.run.execution import (
    ExecutionOptions,
    autocast,
    choose_eval_chunk,
    choose_task_chunk,
    chunk_candidates,
    cpu_has_native_bf16,
)
from bench.run.runner import Episodes, problem_for
from bench.run.timing import PeakMemory, SegmentTimer, resident_mb
from bench.seeding import generator
from bench.tasks import TaskBatch

log = logging.getLogger(__name__)

PERF_FORMAT = 1
ALL_TASKS = 0  # Setting.task_chunk: every task of the meta-batch in one grouped call


@dataclass(frozen=True)
class Setting:
    """One implementation on one configuration."""

    method: str  # maml | fomaml | protonet
    implementation: str  # l2l | ours
    inner_steps: int = 1
    task_chunk: int | None = None  # ours: None = the measured choice, ALL_TASKS = one grouped call
    checkpoint: bool = False
    autocast: str | None = None
    quick: bool = False

    @property
    def first_order(self) -> bool:
        return self.method == "fomaml"

    @property
    def label(self) -> str:
        if self.implementation == "l2l":
            return "learn2learn MAML (per task)"
        parts = ["all tasks in one grouped call" if self.task_chunk == ALL_TASKS else
                 f"chunk {self.task_chunk}" if self.task_chunk else "chunk auto"]
        if self.checkpoint:
            parts.append("checkpointed")
        if self.autocast:
            parts.append(f"{self.autocast} autocast")
        return f"bench {self.method} ({', '.join(parts)})"

    @property
    def configuration(self) -> str:
        order = {"maml": "second order", "fomaml": "first order", "protonet": "ProtoNet"}[self.method]
        return order if self.method == "protonet" else f"{order}, {self.inner_steps} step{'s' * (self.inner_steps > 1)}"


def perf_suite(quick: bool) -> Suite:
    """The suite whose configuration the comparisons run (the quick variant is for tests)."""
    overrides = {"meta_batch_size": 4, "train_queries": 5, "model.filters": 16} if quick else {}
    return load_suite("omniglot-5w1s", tier="paper", overrides=overrides)


def _conv4_shape(suite: Suite) -> tuple[int, int]:
    """The perf suite's Conv-4 filters and ways."""
    assert isinstance(suite.model, Conv4Model) and suite.ways is not None, "the perf suite is Omniglot on Conv-4"
    return suite.model.filters, suite.ways


def plain_conv4(filters: int, ways: int) -> nn.Sequential:
    """The max-pool Conv-4 as a learn2learn user writes it (its OmniglotCNN is a different, strided network)."""
    layers: list[nn.Module] = []
    for index in range(4):
        layers += [nn.Conv2d(1 if index == 0 else filters, filters, 3, padding=1),
                   nn.BatchNorm2d(filters, track_running_stats=False), nn.ReLU(), nn.MaxPool2d(2)]
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(filters, ways))


def copy_conv4_weights(source: nn.Module, target: nn.Sequential) -> None:
    """Our Conv4's weights into ``plain_conv4``'s layers (conv and norm of block i are layers 4i and 4i+1)."""
    params = dict(source.named_parameters())
    with torch.no_grad():
        for index in range(4):
            for kind, layer in (("conv", target[4 * index]), ("norm", target[4 * index + 1])):
                cast(torch.Tensor, layer.weight).copy_(params[f"blocks.{index}.{kind}.weight"])
                cast(torch.Tensor, layer.bias).copy_(params[f"blocks.{index}.{kind}.bias"])
        cast(torch.Tensor, target[-1].weight).copy_(params["head_layer.weight"])
        cast(torch.Tensor, target[-1].bias).copy_(params["head_layer.bias"])


def plain_name(name: str) -> str:
    """Our Conv4 parameter name -> ``plain_conv4``'s."""
    if name.startswith("head_layer."):
        return f"17.{name.split('.')[-1]}"
    _, index, kind, what = name.split(".")
    return f"{4 * int(index) + (kind == 'norm')}.{what}"


def batch_for(suite: Suite, device: torch.device, iteration: int = 0) -> tuple[Episodes | None, TaskBatch, str]:
    """A real Omniglot meta-batch when the data is there, else a seeded synthetic one of the same shape."""
    try:
        check_available(suite)
        episodes = Episodes(suite, device)
        return episodes, episodes.train(0, iteration), "omniglot episodes"
    except BenchError:
        shape = suite.episode_shape["train"]
        ways, shots, queries = shape["ways"], shape["shots"], shape["queries"]
        generator = torch.Generator().manual_seed(iteration)
        tasks = suite.meta_batch_size
        assert ways is not None, "the perf suite is classification"

        def images(n: int) -> torch.Tensor:
            return (torch.rand(tasks, n, 1, 28, 28, generator=generator) > 0.8).float().to(device)

        def labels(n: int) -> torch.Tensor:
            return torch.arange(ways).repeat_interleave(n).expand(tasks, -1).contiguous().to(device)

        batch = TaskBatch(images(ways * shots), labels(shots), images(ways * queries), labels(queries))
        return None, batch, "synthetic (no Omniglot data)"


class Implementation:
    """Builds one setting's model and runs its meta-training step."""

    def __init__(self, setting: Setting, device: torch.device, batch: TaskBatch, dtype: torch.dtype = torch.float32) -> None:
        self.setting, self.device = setting, device
        self.batch = batch
        suite = perf_suite(setting.quick)
        hparams = dict(suite.algorithms.get("maml", {}), inner_steps=setting.inner_steps) if setting.method != "protonet" else {}
        name = setting.method
        algorithm_cls = ALGORITHMS.get(name)
        hparams = {k: v for k, v in hparams.items() if k in algorithm_cls.Hparams.model_fields}
        source = _SourceShape(tuple(batch.support_x.shape[2:]))
        problem = problem_for(suite, source)
        self.ours = algorithm_cls(algorithm_cls.Hparams(**hparams), problem, generator("perf", "init")).to(device, dtype)
        self.execution = ExecutionOptions(task_chunk=setting.task_chunk or None, checkpoint_inner_steps=setting.checkpoint,
                                          autocast=setting.autocast)
        self.chosen: dict[str, Any] = {}
        if setting.implementation == "l2l":
            l2l = import_learn2learn()
            self.model = plain_conv4(*_conv4_shape(suite)).to(device, dtype)
            copy_conv4_weights(self.ours.backbone, self.model)
            ours_hparams: Any = self.ours.hparams  # MAML's (or FOMAML's), with inner_lr and outer_lr
            self.learner = l2l.algorithms.MAML(self.model, lr=ours_hparams.inner_lr, first_order=setting.first_order)
            self.optimizer = torch.optim.Adam(self.learner.parameters(), lr=ours_hparams.outer_lr)
        else:
            if hasattr(self.ours, "checkpoint_inner_steps"):
                setattr(self.ours, "checkpoint_inner_steps", setting.checkpoint)  # noqa: B010 (gradient-based only)

    def choose_chunk(self) -> None:
        """Set our task chunk as the setting says (measured, set, or all tasks); records how in ``chosen``."""
        if self.setting.implementation != "ours":
            return
        if self.setting.task_chunk == ALL_TASKS:
            self.ours.task_chunk = len(self.batch)
            self.chosen = {"task_chunk": len(self.batch), "task_chunk_choice": "set (all tasks)"}
        else:
            self.chosen = choose_task_chunk(self.ours, self.batch, self.device, self.execution)

    def meta_gradient(self, batch: TaskBatch) -> None:
        """The meta-gradient of ``batch`` into ``.grad`` (no update)."""
        if self.setting.implementation == "l2l":
            tasks = len(batch)
            for task in range(tasks):
                learner = self.learner.clone()
                for _ in range(self.setting.inner_steps):
                    learner.adapt(F.cross_entropy(learner(batch.support_x[task]), batch.support_y[task]))
                (F.cross_entropy(learner(batch.query_x[task]), batch.query_y[task]) / tasks).backward()
        else:
            with autocast(self.execution, self.device):
                self.ours.accumulate_meta_gradient(batch)

    def step(self) -> None:
        optimizer = self.optimizer if self.setting.implementation == "l2l" else self.ours.optimizer
        optimizer.zero_grad(set_to_none=True)
        self.meta_gradient(self.batch)
        optimizer.step()

    def gradients(self) -> dict[str, torch.Tensor]:
        """Meta-gradients by our parameter names (every parameter has one after ``meta_gradient``)."""
        if self.setting.implementation == "l2l":
            grads = {n: p.grad for n, p in self.model.named_parameters()}
            found = {name: grads[plain_name(name)] for name in dict(self.ours.backbone.named_parameters())}
        else:
            found = {n: p.grad for n, p in self.ours.backbone.named_parameters()}
        missing = [name for name, grad in found.items() if grad is None]
        if missing:
            raise RuntimeError(f"{self.setting.label}: no meta-gradient for {', '.join(missing)}")
        return {name: cast(torch.Tensor, grad) for name, grad in found.items()}


@dataclass(frozen=True)
class _SourceShape:
    """What ``problem_for`` needs of a task source, without loading one."""

    in_shape: tuple[int, ...]


def matmul_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """The device's float32 matmul rate, the yardstick for how much of the machine a step uses: the
    fastest of ``repeats`` products, since a peak is what the machine can do, and a burst of other
    load on a shared host (seen here: half the rate for seconds) only ever slows a sample down."""
    a = torch.randn(size, size, device=device)
    a @ a
    times = []
    for _ in range(repeats):
        timer = SegmentTimer(device)
        timer.start()
        a @ a
        timer.stop()
        times.append(timer.seconds())
    return 2 * size**3 / min(times) / 1e9


def flops_per_task(setting: Setting, device: torch.device, batch: TaskBatch) -> float:
    """FLOPs of one task's meta-gradient, counted on learn2learn's per-task loop (measured: the
    counter over-counts grouped convolutions) for the gradient-based settings."""
    from torch.utils.flop_counter import FlopCounterMode

    loop = replace(setting, implementation="l2l") if setting.method != "protonet" else setting
    counted = Implementation(loop, device, batch.slice(0, 1))
    with FlopCounterMode(display=False) as counter:
        counted.meta_gradient(counted.batch)
    return counter.get_total_flops()


def network_floor(setting: Setting, device: torch.device, batch: TaskBatch, rounds: int) -> dict[str, Any]:
    """The query step alone: the network's forward, loss and backward on a task's query images at
    the meta-parameters, with no support step and no second-order terms, timed in interleaved
    rounds: learn2learn's network (the plain ``nn.Sequential``, one task per call, in both memory
    layouts) and ours (the functional Conv-4 with per-task parameters, as meta-training calls it,
    at every candidate task chunk). Every implementation compared runs its network's query step for
    every task and adds the support steps and the second-order terms to it, so the fastest rate
    here is what an implementation on these networks would reach if those cost nothing: where it
    is below twice learn2learn's rate, no change outside the network evaluation reaches 2x."""
    suite = perf_suite(setting.quick)
    plain = plain_conv4(*_conv4_shape(suite)).to(device)
    ours = Implementation(replace(setting, implementation="ours"), device, batch).ours
    variants: list[_QueryStep] = []
    for layout, name in ((torch.contiguous_format, "contiguous"), (torch.channels_last, "channels_last")):
        network = copy.deepcopy(plain).to(memory_format=layout)
        x = batch.query_x[0].contiguous(memory_format=layout)
        variants.append(_QueryStep(f"learn2learn's network, {name}, 1 task per call", 1, device, network.parameters(),
                                   partial(_plain_query_loss, network, x, batch.query_y[0])))
    for chunk in chunk_candidates(len(batch)):  # every chunk an implementation here may run at
        tasks = batch.slice(0, chunk)
        variants.append(_QueryStep(f"ours, {chunk} task(s) per call", chunk, device, ours.parameters(),
                                   partial(_our_query_loss, ours, tasks)))
    seconds = interleaved_seconds(variants, rounds)
    rates = [round(v.tasks / statistics.median(t), 2) for v, t in zip(variants, seconds, strict=True)]
    rows = [{"variant": v.label, "tasks_per_call": v.tasks, "tasks_per_s": rate} for v, rate in zip(variants, rates, strict=True)]
    return {"variants": rows, "tasks_per_s": max(rates)}


def _plain_query_loss(network: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(network(x), labels)


def _our_query_loss(ours: Algorithm, tasks: TaskBatch) -> torch.Tensor:
    params = per_task(ours.backbone.params(), len(tasks))
    return ours.problem.loss(ours.backbone.functional(params, tasks.query_x), tasks.query_y).mean()


class _QueryStep:
    def __init__(self, label: str, tasks: int, device: torch.device, parameters: Iterable[torch.Tensor],
                 loss: Callable[[], torch.Tensor]) -> None:
        self.label, self.tasks, self.device, self.parameters, self.loss = label, tasks, device, list(parameters), loss

    def step(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None
        self.loss().backward()


def profile_ops(implementation: Implementation, top: int = 8) -> list[dict[str, Any]]:
    """Which operators one meta-training step spends its time in (torch.profiler, self time)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if implementation.device.type == "cuda" else [])
    with profile(activities=activities) as profiler:
        implementation.step()
    attribute = "self_device_time_total" if implementation.device.type == "cuda" else "self_cpu_time_total"
    events = [(e.key, getattr(e, attribute)) for e in profiler.key_averages()]
    total = sum(t for _, t in events) or 1.0
    events.sort(key=lambda e: -e[1])
    return [{"op": key, "share": round(t / total, 3)} for key, t in events[:top]]


class Steps(Protocol):
    """Anything ``interleaved_seconds`` can time: one ``step()`` at a time, on ``device``."""

    device: torch.device

    def step(self) -> None: ...


def interleaved_seconds(implementations: Sequence[Steps], rounds: int) -> list[list[float]]:
    for implementation in implementations:
        implementation.step()  # warm-up: one-time allocations and kernel selection
    seconds: list[list[float]] = [[] for _ in implementations]
    for _ in range(rounds):
        for index, implementation in enumerate(implementations):
            timer = SegmentTimer(implementation.device)
            timer.start()
            implementation.step()
            timer.stop()
            seconds[index].append(timer.seconds())
    return seconds


def gradient_agreement(setting: Setting, device: torch.device, batch: TaskBatch, tasks: int) -> float:
    """Largest |ours - learn2learn| over the meta-gradient, float64, on the first ``tasks`` tasks."""
    sub = batch.slice(0, tasks)
    sub = sub.map_tensors(lambda t: t.double() if t.is_floating_point() else t)
    grads = []
    for implementation in ("l2l", "ours"):
        built = Implementation(replace(setting, implementation=implementation, autocast=None), device, sub, torch.float64)
        if implementation == "ours":
            built.ours.task_chunk = setting.task_chunk
        built.meta_gradient(sub)
        grads.append(built.gradients())
    if setting.autocast:  # the reduced-precision run against the float64 reference, in float32 inputs
        built = Implementation(setting, device, batch.slice(0, tasks))
        built.ours.task_chunk = setting.task_chunk
        built.meta_gradient(built.batch)
        grads[1] = {k: v.double() for k, v in built.gradients().items()}
    return max((grads[0][k] - grads[1][k]).abs().max().item() for k in grads[0])


def _two_step_peak_mb(setting: Setting, device: torch.device, task_chunk: int | None, batch: TaskBatch) -> float:
    """Extra peak memory of two meta-training steps of a newly built implementation."""
    allocated_before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0
    implementation = Implementation(setting, device, batch)
    implementation.ours.task_chunk = task_chunk
    memory = PeakMemory(device)  # resets the high-water mark to the resident memory now
    baseline = allocated_before if device.type == "cuda" else resident_mb()
    for _ in range(2):
        implementation.step()
    return memory.peak_mb() - baseline


def _memory_child(setting: Setting, device_name: str, task_chunk: int | None, threads: int, queue: Any) -> None:
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    _, batch, _ = batch_for(perf_suite(setting.quick), device)
    queue.put(_two_step_peak_mb(setting, device, task_chunk, batch))


def peak_memory_mb(setting: Setting, device: torch.device, task_chunk: int | None, batch: TaskBatch | None = None) -> float:
    """Extra peak memory of two meta-training steps (see the module docstring).

    On CUDA the allocator counts every tensor's bytes, so measuring in this process, above what was
    allocated before the implementation was built, charges no implementation for another's (and a
    fresh process would cost seconds of CUDA start-up per row). A CPU process's resident memory
    keeps what earlier rows freed, so there each measurement runs in a fresh process.
    """
    if device.type == "cuda":
        if batch is None:
            _, batch, _ = batch_for(perf_suite(setting.quick), device)
        peak = _two_step_peak_mb(setting, device, task_chunk, batch)
        torch.cuda.empty_cache()
        return peak
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(setting, str(device), task_chunk, torch.get_num_threads(), queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the memory measurement of {setting.label} failed (exit code {process.exitcode})")
    return float(queue.get())


@dataclass
class Comparison:
    """Settings timed together; the first is the reference (learn2learn) when there is one."""

    title: str
    settings: list[Setting]
    memory: bool = True
    agreement: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)


def comparisons(quick: bool) -> list[Comparison]:
    def s(method: str, implementation: str, **kw: Any) -> Setting:
        return Setting(method, implementation, quick=quick, **kw)

    groups = [
        Comparison("MAML second order, 1 step", [s("maml", "l2l"), s("maml", "ours"), s("maml", "ours", task_chunk=1),
                                                 s("maml", "ours", task_chunk=ALL_TASKS), s("maml", "ours", autocast="bf16")]),
        Comparison("MAML second order, 5 steps", [s("maml", "l2l", inner_steps=5), s("maml", "ours", inner_steps=5)]),
        Comparison("first-order MAML, 1 step", [s("fomaml", "l2l"), s("fomaml", "ours")]),
        Comparison("first-order MAML, 5 steps", [s("fomaml", "l2l", inner_steps=5), s("fomaml", "ours", inner_steps=5)]),
        Comparison("ProtoNet", [s("protonet", "ours")], agreement=False),
    ]
    if quick:
        groups = [groups[0], groups[2], groups[4]]
    return groups


def checkpoint_memory(quick: bool, device: torch.device, steps_list: tuple[int, ...],
                      batch: TaskBatch | None = None) -> list[dict[str, Any]]:
    """Peak memory of second-order MAML against inner steps, with and without checkpointing (per-task chunks)."""
    rows = []
    for steps in steps_list:
        for checkpointed in (False, True):
            setting = Setting("maml", "ours", inner_steps=steps, task_chunk=1, checkpoint=checkpointed, quick=quick)
            rows.append({"name": f"maml-so-{steps}step{'-checkpointed' if checkpointed else ''}-memory",
                         "inner_steps": steps, "checkpointed": checkpointed,
                         "peak_mem_mb": round(peak_memory_mb(setting, device, 1, batch), 1)})
    return rows


def build_comparison(group: Comparison, device: torch.device, batch: TaskBatch,
                     fastest_ours: dict[str, Implementation]) -> list[Implementation]:
    """The group's implementations, each at its task chunk; ``fastest_ours`` collects, per method,
    our implementation at the measured chunk."""
    built = []
    for setting in group.settings:
        implementation = Implementation(setting, device, batch)
        if setting.autocast and device.type == "cpu" and not cpu_has_native_bf16() and setting.method in fastest_ours:
            # Emulated bf16 runs many times slower than float32: measuring its chunk would take
            # minutes for a row that only shows how slow it is, so it runs at float32's choice.
            chunk = fastest_ours[setting.method].chosen["task_chunk"]
            implementation.ours.task_chunk = chunk
            implementation.chosen = {"task_chunk": chunk,
                                     "task_chunk_choice": "set (float32's choice: this CPU has no native bf16)"}
        else:
            implementation.choose_chunk()
        built.append(implementation)
        if setting.implementation == "ours" and setting.task_chunk is None and not setting.autocast:
            fastest_ours.setdefault(setting.method, implementation)
    return built


def timed_row(group: Comparison, implementation: Implementation, tasks_per_s: float, times: list[float],
              flops: float, floor: dict[str, Any]) -> dict[str, Any]:
    setting, chunk = implementation.setting, implementation.chosen.get("task_chunk")
    return {
        "name": f"{setting.method}-{setting.implementation}-{setting.inner_steps}step"
                + (f"-chunk{chunk}" if setting.task_chunk is not None else "")
                + ("-bf16" if setting.autocast else ""),
        "comparison": group.title, "implementation": setting.label, "configuration": setting.configuration,
        "method": setting.method, "inner_steps": setting.inner_steps, "task_chunk": chunk,
        "task_chunk_choice": implementation.chosen.get("task_chunk_choice"), "autocast": setting.autocast,
        "tasks_per_s": round(tasks_per_s, 2), "seconds_per_step": [round(t, 4) for t in times],
        "gflops": round(flops * tasks_per_s / 1e9, 1), "share_of_matmul_peak": None,  # set at the end
        "share_of_floor": round(tasks_per_s / floor["tasks_per_s"], 3) if setting.method != "protonet" else None,
        "speedup_vs_l2l": None, "peak_mem_mb": None, "memory_vs_l2l": None, "max_grad_diff": None,
    }


def measure_row(row: dict[str, Any], tasks_per_s: float, group: Comparison, implementation: Implementation,
                reference: dict[str, Any] | None, memory: bool, batch: TaskBatch) -> None:
    """The row's ratio to learn2learn, peak memory (fresh processes) and float64 gradient agreement."""
    setting, device, chunk = implementation.setting, implementation.device, row["task_chunk"]
    if reference is not None and row is not reference:
        row["speedup_vs_l2l"] = round(tasks_per_s / reference["tasks_per_s"], 2)
    if memory and group.memory:
        row["peak_mem_mb"] = round(peak_memory_mb(setting, device, chunk, batch), 1)
        if reference is not None and setting.implementation == "ours" and reference["peak_mem_mb"]:
            row["memory_vs_l2l"] = round(row["peak_mem_mb"] / reference["peak_mem_mb"], 2)
    if group.agreement and setting.implementation == "ours":
        row["max_grad_diff"] = gradient_agreement(replace(setting, task_chunk=chunk), device, batch, min(4, len(batch)))


def run_perf(device: torch.device, quick: bool = False, rounds: int | None = None, memory: bool = True,
             checkpoint_steps: tuple[int, ...] = (1, 5, 10, 20), progress: Callable[[str], None] = log.info) -> dict[str, Any]:
    """Every comparison; returns the perf record (``rows`` hold one object per implementation and configuration)."""
    if not learn2learn_available():
        raise BenchError("bench perf compares with learn2learn, which is not installed; "
                         "run `python tools/install_learn2learn.py` (tox and .ci/run do this for you)")
    rounds = rounds or (1 if quick else 3)
    suite = perf_suite(quick)
    episodes, batch, inputs = batch_for(suite, device)
    peak_samples = [matmul_gflops(device)]  # and again at the end; the faster counts
    peak = peak_samples[0]
    progress(f"matmul reference: {peak:.0f} GFLOP/s float32 on {device} (measured again at the end)")
    rows: list[dict[str, Any]] = []
    achieved: dict[int, float] = {}  # id(row) -> GFLOP/s
    bounded: tuple[str, float, float] | None = None  # the compute bound's configuration, FLOPs per task, l2l's rate
    fastest_ours: dict[str, Implementation] = {}  # per method, the measured-choice implementation (for the data share)
    record_extra: dict[str, Any] = {}
    groups = comparisons(quick)
    progress(f"the query step alone (network floor), {rounds} interleaved round(s)")
    floor = network_floor(groups[0].settings[0], device, batch, rounds)
    for group in groups:
        progress(f"{group.title}: {len(group.settings)} implementation(s), {rounds} interleaved round(s)")
        built = build_comparison(group, device, batch, fastest_ours)
        seconds = interleaved_seconds(built, rounds)
        flops = flops_per_task(group.settings[0], device, batch)
        reference = None
        for implementation, times in zip(built, seconds, strict=True):
            tasks_per_s = len(batch) / statistics.median(times)
            row = timed_row(group, implementation, tasks_per_s, times, flops, floor)
            achieved[id(row)] = flops * tasks_per_s / 1e9
            reference = reference or (row if implementation.setting.implementation == "l2l" else None)
            measure_row(row, tasks_per_s, group, implementation, reference, memory, batch)
            progress(f"  {row['implementation']}: {row['tasks_per_s']} tasks/s"
                     + (f", {row['speedup_vs_l2l']}x learn2learn" if row["speedup_vs_l2l"] else ""))
            rows.append(row)
        if reference is not None and group is groups[0]:
            # The chosen path, the per-task loop, every task grouped, and learn2learn's (the group's
            # first, its reference), one step each.
            profiled = [fastest_ours[group.settings[0].method]]
            profiled += [i for i in built if i.setting.autocast is None and i.setting.task_chunk is not None] + [built[0]]
            record_extra["profiles"] = [
                {"implementation": i.setting.label, "configuration": i.setting.configuration,
                 "task_chunk": i.chosen.get("task_chunk"), "ops": profile_ops(i)} for i in profiled]
            bounded = (group.title, flops, reference["tasks_per_s"])
            record_extra["network_floor"] = {**floor, "configuration": group.title,
                                             "max_speedup_vs_l2l": round(floor["tasks_per_s"] / reference["tasks_per_s"], 2)}
        if group.settings[0].method == "protonet":
            rows[-1]["test_episodes_per_s"] = round(protonet_test_rate(built[0], episodes, batch, device), 2)
    if episodes is not None:
        for implementation in fastest_ours.values():
            rows.append(data_share_row(episodes, implementation, device, batch))
    peak_samples.append(matmul_gflops(device))
    peak = max(peak_samples)
    progress(f"matmul reference at the end: {peak_samples[-1]:.0f} GFLOP/s; the faster one counts: {peak:.0f}")
    for row in rows:
        if id(row) in achieved:
            row["share_of_matmul_peak"] = round(achieved[id(row)] / peak, 3)
    if bounded is not None:
        # The compute bound: every FLOP of a task at the device's matmul rate.
        title, flops, l2l_rate = bounded
        bound = peak * 1e9 / flops
        record_extra["compute_bound"] = {"configuration": title, "gflop_per_task": round(flops / 1e9, 3),
                                         "tasks_per_s_at_matmul_peak": round(bound, 1),
                                         "max_speedup_vs_l2l": round(bound / l2l_rate, 2)}
    record = {
        "perf_format": PERF_FORMAT, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "configuration": {"suite": suite.name, "tier": suite.tier, "ways": suite.ways, "shots": suite.shots,
                          "queries": suite.episode_shape["train"]["queries"], "meta_batch_size": suite.meta_batch_size,
                          "model": suite.model.model_dump(mode="json"), "batch_norm": suite.batch_norm,
                          "inputs": inputs, "quick": quick, "rounds": rounds},
        "matmul_gflops": round(peak, 1), "matmul_gflops_samples": [round(g, 1) for g in peak_samples],
        "environment": environment(device), "rows": rows, **record_extra,
    }
    record["test_time"] = test_time_rows(suite, episodes, batch, device, rounds, quick, progress)
    if memory and checkpoint_steps:
        progress(f"checkpointing: peak memory at {', '.join(map(str, checkpoint_steps))} inner steps")
        record["checkpoint_memory"] = checkpoint_memory(quick, device, checkpoint_steps, batch)
    return record


class _TestTime:
    """One way of adapting MAML's meta-parameters to every evaluation episode (first order, the
    protocol's inner steps) and scoring the queries; ``step`` runs it once, ``scores`` keeps the last."""

    def __init__(self, label: str, device: torch.device, run: Callable[[], torch.Tensor]) -> None:
        self.label, self.device, self.run = label, device, run
        self.scores: torch.Tensor | None = None

    def step(self) -> None:
        self.scores = self.run()


def l2l_test_time(learner: Any, episodes: TaskBatch, steps: int) -> torch.Tensor:
    """Query accuracy (%) per episode, the way learn2learn's examples evaluate: clone, adapt, predict, one task at a time."""
    scores = []
    for task in range(len(episodes)):
        adapted = learner.clone()
        for _ in range(steps):
            adapted.adapt(F.cross_entropy(adapted(episodes.support_x[task]), episodes.support_y[task]))
        with torch.no_grad():
            scores.append((adapted(episodes.query_x[task]).argmax(-1) == episodes.query_y[task]).float().mean() * 100)
    return torch.stack(scores)


def test_time_rows(suite: Suite, episodes: Episodes | None, batch: TaskBatch, device: torch.device, rounds: int, quick: bool,
                   progress: Callable[[str], None]) -> list[dict[str, Any]]:
    """Test-time adaptation side by side on the same evaluation episodes and weights: learn2learn's
    per-task loop, ours one episode at a time (evaluation chunk 1), ours at the measured evaluation
    chunk, and every episode in one grouped call."""
    sample = episodes.evaluation_sample() if episodes is not None else batch
    steps = suite.test_inner_steps
    if quick:  # for tests: a few episodes, two steps
        sample, steps = sample.slice(0, min(8, len(sample))), min(2, steps)
    reference = Implementation(Setting("fomaml", "l2l", quick=quick), device, batch)
    ours = reference.ours  # the same initial weights as learn2learn's copy

    def ours_at(chunk: int) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            setattr(ours, "eval_chunk", chunk)  # noqa: B010 (MAML's, which Algorithm does not declare)
            return ours.evaluate(sample, steps)
        return run

    chosen = choose_eval_chunk(ours, sample, steps, device, ExecutionOptions())
    ways = [_TestTime("learn2learn MAML (per task)", device, lambda: l2l_test_time(reference.learner, sample, steps)),
            _TestTime("bench maml (evaluation chunk 1: per task)", device, ours_at(1)),
            _TestTime(f"bench maml (evaluation chunk auto -> {chosen['eval_chunk']})", device, ours_at(chosen["eval_chunk"])),
            _TestTime(f"bench maml (all {len(sample)} episodes in one grouped call)", device, ours_at(len(sample)))]
    title = f"test-time adaptation, {steps} steps, {len(sample)} episodes"
    progress(f"{title}: {len(ways)} implementation(s), {rounds} interleaved round(s)")
    seconds = interleaved_seconds(ways, rounds)
    rates = [len(sample) / statistics.median(times) for times in seconds]
    rows = []
    for way, rate, times in zip(ways, rates, seconds, strict=True):
        rows.append({"comparison": title, "implementation": way.label, "episodes_per_s": round(rate, 2),
                     "seconds_per_call": [round(t, 4) for t in times],
                     "speedup_vs_l2l": round(rate / rates[0], 2), "speedup_vs_per_task": round(rate / rates[1], 2),
                     # Scores of the same episodes from the same weights: equal but for rounding near a tie.
                     "max_score_diff_vs_l2l": round(float((cast(torch.Tensor, way.scores)
                                                           - cast(torch.Tensor, ways[0].scores)).abs().max()), 4),
                     "eval_chunk_choice": chosen.get("eval_chunk_choice") if "auto" in way.label else None})
        progress(f"  {way.label}: {rows[-1]['episodes_per_s']} episodes/s, {rows[-1]['speedup_vs_per_task']}x per task")
    return rows


def protonet_test_rate(implementation: Implementation, episodes: Episodes | None, batch: TaskBatch,
                       device: torch.device) -> float:
    test = episodes.fixed("test", 20)[0] if episodes is not None else batch
    algorithm = implementation.ours
    timer = SegmentTimer(device)
    with torch.no_grad():
        algorithm.evaluate(test, 0)
        timer.start()
        algorithm.evaluate(test, 0)
        timer.stop()
    return len(test) / timer.seconds()


def data_share_row(episodes: Episodes, implementation: Implementation, device: torch.device, batch: TaskBatch) -> dict[str, Any]:
    """Share of a meta-training step spent assembling its episodes (fresh indices every iteration)."""
    data, total = 0.0, 0.0
    for iteration in range(1, 4):
        start = time.perf_counter()
        implementation.batch = episodes.train(0, iteration)
        assembled = time.perf_counter()
        timer = SegmentTimer(device)
        timer.start()
        implementation.step()
        timer.stop()
        data += assembled - start
        total += assembled - start + timer.seconds()
    implementation.batch = batch
    return {"name": f"data-share-{implementation.setting.method}-{implementation.setting.inner_steps}step",
            "comparison": "episode assembly",
            "implementation": implementation.setting.label, "configuration": implementation.setting.configuration,
            "data_share": round(data / total, 4),
            "tasks_per_s": None, "speedup_vs_l2l": None, "peak_mem_mb": None, "max_grad_diff": None}


def render(record: dict[str, Any]) -> str:
    """The perf record as one Markdown table (and the checkpointing table)."""
    def fmt(value: Any, spec: str = "") -> str:
        if value is None:
            return ""
        return format(value, spec) if spec else str(value)

    lines = ["| comparison | implementation | tasks/s | vs learn2learn | peak MB | memory vs l2l | GFLOP/s "
             "| share of matmul peak | share of network floor | max grad diff (float64) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        if row["name"].startswith("data-share"):
            continue
        rate = fmt(row["tasks_per_s"])
        if row.get("test_episodes_per_s"):
            rate += f" (train), {row['test_episodes_per_s']} test episodes/s"
        diff = row.get("max_grad_diff")
        lines.append(f"| {row['comparison']} | {row['implementation']}"
                     + (f" -> chunk {row['task_chunk']}" if row.get("task_chunk") and "auto" in row["implementation"] else "")
                     + f" | {rate} | {fmt(row['speedup_vs_l2l'], '.2f')}{'x' if row['speedup_vs_l2l'] else ''} | "
                     f"{fmt(row['peak_mem_mb'], '.0f')} | {fmt(row.get('memory_vs_l2l'), '.2f')} | {fmt(row.get('gflops'))} | "
                     f"{fmt(row.get('share_of_matmul_peak'), '.0%')} | {fmt(row.get('share_of_floor'), '.0%')} | "
                     f"{'' if diff is None else f'{diff:.1e}'} |")
    for row in record["rows"]:
        if row["name"].startswith("data-share"):
            lines.append(f"\nEpisode assembly: {row['data_share']:.2%} of meta-training step time "
                         f"({row['implementation']}, {row['configuration']}).")
    if record.get("compute_bound"):
        bound = record["compute_bound"]
        lines.append(f"\nCompute bound ({bound['configuration']}): {bound['gflop_per_task']} GFLOP per task, so at the "
                     f"measured matmul rate at most {bound['tasks_per_s_at_matmul_peak']} tasks/s = "
                     f"{bound['max_speedup_vs_l2l']}x learn2learn.")
    if record.get("network_floor"):
        floor = record["network_floor"]
        lines.append("\nThe query step alone (forward, loss and backward on the query images at the meta-parameters; "
                     "no support step, no second-order terms), tasks/s: "
                     + "; ".join(f"{v['variant']}: {v['tasks_per_s']}" for v in floor["variants"])
                     + f". Every implementation above runs its network's query step for every task, so on these "
                     f"networks none can pass {floor['tasks_per_s']} tasks/s = {floor['max_speedup_vs_l2l']}x "
                     f"learn2learn's {floor['configuration']}, whatever its support steps and second-order terms cost.")
    for profile in record.get("profiles") or ([record["profile"]] if record.get("profile") else []):
        chosen = profile.get("task_chunk") and "chunk auto" in profile["implementation"]
        chunk = f" -> chunk {profile['task_chunk']}" if chosen or "profiles" not in record else ""
        lines.append(f"\nWhere the step's time goes ({profile['implementation']}{chunk}, "
                     f"{profile['configuration']}; operator self time): "
                     + ", ".join(f"{op['op']} {op['share']:.0%}" for op in profile["ops"]) + ".")
    if record.get("test_time"):
        lines += ["", "| comparison | implementation | test episodes/s | vs per task | vs learn2learn "
                      "| max score diff vs learn2learn |", "|---|---|---|---|---|---|"]
        lines += [f"| {row['comparison']} | {row['implementation']} | {row['episodes_per_s']} | "
                  f"{row['speedup_vs_per_task']:.2f}x | {row['speedup_vs_l2l']:.2f}x | {row['max_score_diff_vs_l2l']:g} |"
                  for row in record["test_time"]]
    if record.get("checkpoint_memory"):
        steps = sorted({r["inner_steps"] for r in record["checkpoint_memory"]})
        by = {(r["inner_steps"], r["checkpointed"]): r["peak_mem_mb"] for r in record["checkpoint_memory"]}
        lines += ["", "| second-order MAML, per-task chunks | " + " | ".join(f"{s} steps" for s in steps) + " |",
                  "|---|" + "---|" * len(steps),
                  "| peak MB, graph kept | " + " | ".join(f"{by[(s, False)]:.0f}" for s in steps) + " |",
                  "| peak MB, inner steps checkpointed | " + " | ".join(f"{by[(s, True)]:.0f}" for s in steps) + " |"]
    config = record["configuration"]
    header = (f"bench perf: {config['suite']} ({config['tier']} tier) {config['ways']}-way {config['shots']}-shot, "
              f"{config['queries']} queries per class, meta-batch {config['meta_batch_size']}, "
              f"Conv-4-{config['model']['filters']}, "
              f"{config['batch_norm']} batch norm, {config['inputs']}; {record['environment'].get('device_name')}"
              f"{f' ({cpu})' if (cpu := machine_of(record)[1]) else ' (CPU model not recorded)'}, "
              f"{record['environment'].get('torch')}, {record['environment'].get('torch_threads')} threads; "
              f"matmul {record['matmul_gflops']} GFLOP/s; "
              f"medians of {config['rounds']} interleaved round(s)")
    return header + "\n\n" + "\n".join(lines)


def machine_of(record: dict[str, Any]) -> tuple[str, str | None]:
    """The machine a perf record's figures hold for: the device's name and, for a CPU, its model
    (vendor, family, model; None in records from before the CPU identity was kept)."""
    env = record["environment"]
    identity = (env.get("cpu_identity") or {}).get("id") if str(env.get("device", "cpu")).startswith("cpu") else None
    return str(env.get("device_name") or "?"), " ".join(identity.split()[:3]) if identity else None


def newest_per_machine(found: list[tuple[Path, dict[str, Any]]]) -> list[tuple[Path, dict[str, Any]]]:
    """The newest full record of each machine, oldest machine first. A record that names no CPU
    model gives way to a newer one of the same device name that does (it was most likely that
    machine, and a figure without its model cannot stand beside one with it)."""
    latest: dict[tuple[str, str | None], tuple[Path, dict[str, Any]]] = {}
    for path, record in sorted(found, key=lambda item: item[1]["created_at"]):
        name, model = machine_of(record)
        if model is not None:
            latest.pop((name, None), None)
        latest[(name, model)] = (path, record)
    return sorted(latest.values(), key=lambda item: item[1]["created_at"])


def save(record: dict[str, Any], path: Path) -> None:
    write_atomic(path, json.dumps(record, indent=1, allow_nan=False) + "\n")
