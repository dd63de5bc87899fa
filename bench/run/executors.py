"""Where a plan's runs execute: in this process one after another (local), or as Ray tasks.

Whatever the executor, this process (the driver) is the only writer of records: it files a record
as ``running`` when a run starts (local) or is submitted (Ray), and rewrites it with the outcome.
Workers compute and write only their training checkpoints (``bench.run.checkpoints``).

Resuming (``--resume``) and concurrent runs rest on two kinds of lock under
``<results_dir>/.locks/``, advisory ``flock`` locks (via ``filelock``) that the OS releases when
their process dies, even by ``kill -9``:

- the job lock (one per job key, ``bench.identity.run_identity``) is held while a process runs that job, so a
  resuming process leaves alone a job another process is running;
- the run lock (one per record) is held while its record may still change, so an unfinished record
  whose run lock is free belongs to a dead process and may be continued.

Two processes writing to one results directory therefore lose nothing: records have unique names
(time + random suffix) and every file is replaced atomically.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from bench import records
from bench.errors import BenchError
from bench.identity import run_identity
from bench.run.checkpoints import checkpoint_path, remove_checkpoint
from bench.run.environment import environment, resolve_device
from bench.run.runner import Episodes, PlannedRun, RunPlan, new_record, train_and_test

log = logging.getLogger(__name__)

LOCKS = records.LOCKS
FINISHED = ("completed", "diverged")  # a rerun would give the same result: --resume skips these jobs
RAY_INSTALL_HINT = "pip install '.[ray]' (or pip install 'ray>=2.9')"


@dataclass
class Job:
    """One planned run as the driver tracks it."""

    index: int
    run: PlannedRun
    path: Path
    record: dict[str, Any]
    checkpoint: Path | None
    key: str
    job_lock: FileLock | None = None  # held while this process runs the job
    run_lock: FileLock | None = None  # held while this process may still change the record

    @property
    def label(self) -> str:
        return f"{self.run.algorithm.name} seed {self.run.seed}"


Start = Callable[[Job], bool]  # False: do not run it (finished, or running elsewhere)
Finish = Callable[[Job, dict[str, Any]], None]


class Executor(Protocol):
    name: str

    def check(self, plan: RunPlan) -> None:
        """Refuse what cannot run (e.g. Ray missing), before any record is written."""

    def run(self, plan: RunPlan, jobs: list[Job], progress: bool, start: Start, finish: Finish) -> None:
        """Run ``jobs``: call ``start(job)`` before each (skip it when that says False) and ``finish(job, record)`` after."""


def _try_lock(path: Path) -> FileLock | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return None
    return lock


def _job_lock_path(plan: RunPlan, key: str) -> Path:
    return plan.results_dir / LOCKS / plan.suite.name / f"job-{key}.lock"


def _run_lock_path(plan: RunPlan, run_id: str) -> Path:
    return plan.results_dir / LOCKS / plan.suite.name / f"run-{run_id}.lock"


def _release(job: Job, finished: bool = False) -> None:
    if job.job_lock is not None:
        job.job_lock.release()
    if job.run_lock is not None:
        job.run_lock.release()
        if finished:  # safe to remove: a resuming process re-reads the record after taking a run lock
            Path(job.run_lock.lock_file).unlink(missing_ok=True)
    job.job_lock = job.run_lock = None


def _stored(plan: RunPlan, run: PlannedRun, key: str) -> list[dict[str, Any]]:
    """The stored records of one job, oldest first (only its own file names are read)."""
    directory = plan.results_dir / plan.suite.name / str(plan.suite.tier)
    found = []
    for path in sorted(directory.glob(f"{run.algorithm.name}-seed{run.seed}-*.json")):
        record = records.load_record(path)
        if run_identity(record) == key:
            record["_path"] = str(path)
            found.append(record)
    return sorted(found, key=lambda r: r["started_at"])


def claim(plan: RunPlan, job: Job, resume: bool) -> dict[str, Any] | bool:
    """Take ``job`` for this process: True to run it, False to leave it to the process running it,
    or (with ``resume``) the record of its finished run. Decided when the job is about to start, so
    two resuming processes share a grid instead of one claiming all of it."""
    job_lock = _try_lock(_job_lock_path(plan, job.key))
    if not resume:
        # A job another process is running runs here too (the user asked for it): a second record, nothing overwritten.
        job.job_lock = job_lock
        return True
    if job_lock is None:
        log.warning("%s: another process is running it; not running it here", job.label)
        return False
    stored = _stored(plan, job.run, job.key)  # read with the job lock held: no other process can finish it now
    done = [r for r in stored if r["status"] in FINISHED]
    if done:
        job_lock.release()
        log.info("%s: already %s (%s); skipped", job.label, done[-1]["status"], done[-1]["_path"])
        return done[-1]
    job.job_lock = job_lock
    for earlier in reversed([r for r in stored if r["status"] in ("running", "interrupted")]):
        run_lock = _try_lock(_run_lock_path(plan, earlier["run_id"]))
        if run_lock is None:
            continue  # its process is alive (a run without --resume that found the job lock taken)
        if records.load_record(Path(earlier["_path"]))["status"] not in ("running", "interrupted"):
            run_lock.release()  # its process finished it after we read it
            continue
        # Continue the newest interrupted record of the job in place, from its checkpoint if there is one.
        job.path, job.record = Path(earlier.pop("_path")), earlier
        for stale in ("error", "ended_at", "timing"):
            job.record.pop(stale, None)
        job.checkpoint = _checkpoint(plan, job.record)
        job.run_lock = run_lock
        break
    return True


def plan_jobs(plan: RunPlan) -> list[Job]:
    jobs = []
    for index, run in enumerate(plan.runs):
        path, record = new_record(plan, run)
        key = run_identity({**record, "execution": plan.execution.as_record()})
        jobs.append(Job(index, run, path, record, _checkpoint(plan, record), key))
    return jobs


def _checkpoint(plan: RunPlan, record: dict[str, Any]) -> Path | None:
    if plan.execution.checkpoint_every == 0:
        return None
    return checkpoint_path(plan.results_dir, plan.suite.name, str(plan.suite.tier), record["run_id"])


def execute(plan: RunPlan, progress: bool = True, executor: Executor | None = None,
            resume: bool = False) -> list[dict[str, Any]]:
    """Run every planned (algorithm, seed) with ``executor`` (default: this process, one after
    another); returns their records in the plan's order. With ``resume``, runs finished in
    ``plan.results_dir`` are skipped (their records returned) and interrupted ones continued."""
    return run_plan(plan, executor or LocalExecutor(), progress=progress, resume=resume)


def run_plan(plan: RunPlan, executor: Executor, progress: bool = True, resume: bool = False) -> list[dict[str, Any]]:
    """Run the plan's jobs with ``executor``; the records in plan order (with ``resume``, finished
    ones as stored; jobs another process is running are left out)."""
    if plan.checked_for != executor.name:  # a plan made without it (the Python API)
        executor.check(plan)
    if plan.device.type == "cuda":
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    for name, why in plan.skipped.items():
        log.info("not running %s: %s", name, why)
    jobs = plan_jobs(plan)
    results: dict[int, dict[str, Any]] = {}

    def start(job: Job) -> bool:
        claimed = claim(plan, job, resume)
        if claimed is not True:
            if claimed is not False:
                results[job.index] = claimed
            return False
        if job.run_lock is None:  # a new run id: only a clash of random suffixes could hold its lock
            job.run_lock = _try_lock(_run_lock_path(plan, job.record["run_id"]))
        log.info("[%d/%d] %s on %s (%s tier), seed %d%s", job.index + 1, len(plan.runs), job.run.algorithm.name,
                 plan.suite.name, plan.suite.tier, job.run.seed,
                 " (continuing an interrupted run)" if job.record["status"] != "running" else "")
        job.record["status"] = "running"
        records.write_record(job.path, job.record)
        return True

    def finish(job: Job, record: dict[str, Any]) -> None:
        record.pop("_path", None)
        # First, before anything else that can fail; if even that fails, the result is kept elsewhere.
        fallbacks = [p for p in (job.checkpoint.parent if job.checkpoint else None, Path(tempfile.gettempdir())) if p]
        records.write_finished_record(job.path, record, fallbacks)
        if record["status"] != "interrupted" and job.checkpoint is not None:
            remove_checkpoint(job.checkpoint)  # after the record: a kill in between leaves only a spare file
        _release(job, finished=record["status"] != "interrupted")
        record["_path"] = str(job.path)
        results[job.index] = record
        if record["status"] == "completed" and "tuning_trial" in record:
            log.info("    best validation %s = %.4g, %.1f s", plan.suite.metric, record["training"]["best_val_metric"]
                     if record["training"]["best_val_metric"] is not None else float("nan"), record["timing"]["wall_time_s"])
        elif record["status"] == "completed":
            metric = record["metric"]
            log.info("    %s = %.4f +- %.4f, %.0f meta-train tasks/s, %.1f s", metric["name"], metric["mean"],
                     metric["ci95"], record["timing"]["meta_train_tasks_per_s"] or float("nan"),
                     record["timing"]["wall_time_s"])

    try:
        executor.run(plan, jobs, progress, start, finish)
    finally:
        for job in jobs:
            _release(job)
    return [results[i] for i in sorted(results)]


def describe_host() -> dict[str, Any]:
    return {"hostname": socket.gethostname(), "pid": os.getpid()}


class LocalExecutor:
    """Runs in this process, one run after another (the default)."""

    name = "local"

    def check(self, plan: RunPlan) -> None:
        pass

    def run(self, plan: RunPlan, jobs: list[Job], progress: bool, start: Start, finish: Finish) -> None:
        episodes = plan.episodes or Episodes(plan.suite, plan.device)
        for job in jobs:
            if not start(job):
                continue
            job.record["executor"] = {"name": self.name, **describe_host()}
            try:
                train_and_test(plan, job.run, episodes, job.record, job.checkpoint, progress,
                               on_configured=partial(records.write_record, job.path))
            except KeyboardInterrupt:
                finish(job, job.record)  # recorded as interrupted; its checkpoint stays for --resume
                raise
            finish(job, job.record)


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BenchError(f"--executor ray needs Ray, which is not installed: {RAY_INSTALL_HINT}") from None
    return ray


class RayExecutor:
    """Each run is a Ray task with its own resources; retried when its worker dies.

    Workers need bench (the same version) and the data: on this machine a local Ray instance
    shares both; on a cluster every node needs the same environment and ``BENCH_DATA_DIR`` (docs/running.md).
    A retried run continues from its checkpoint when the results directory is shared storage.
    """

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0,
                 retries: int = 2, num_cpus: int | None = None) -> None:
        self.address, self.cpus_per_job, self.gpus_per_job = address, cpus_per_job, gpus_per_job
        self.retries, self.num_cpus = retries, num_cpus

    def check(self, plan: RunPlan) -> None:
        import_ray()
        if self.gpus_per_job == 0 and plan.device.type == "cuda":
            raise BenchError("--executor ray with a CUDA device needs --gpus-per-job (e.g. 1, or 0.5 to share a GPU)")
        if not plan.runs:
            return
        # A request no node can meet would wait forever (Ray only prints autoscaler warnings): refuse it now.
        available = self.connect().cluster_resources()
        for option, wanted, resource in (("--cpus-per-job", self.cpus_per_job, "CPU"),
                                         ("--gpus-per-job", self.gpus_per_job, "GPU")):
            total = available.get(resource, 0.0)
            if wanted > total:
                raise BenchError(f"{option} {wanted:g}: the Ray cluster has {total:g} {resource}(s) in all, so no job "
                                 f"could start; ask for at most {total:g} (an autoscaling cluster: start its nodes first)")

    def connect(self) -> Any:
        ray = import_ray()
        if not ray.is_initialized():
            # ray.init replaces the SIGTERM handler with one that aborts the driver (exit 134, records left
            # `running`); ours records the runs in flight as interrupted, as the local executor does.
            handler = signal.getsignal(signal.SIGTERM)
            try:
                ray.init(address=self.address, num_cpus=self.num_cpus if self.address is None else None,
                         include_dashboard=False, log_to_driver=True, logging_level=logging.WARNING)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise BenchError(f"cannot connect to Ray at {self.address or 'a new local instance'}: {exc}; "
                                 "check --address (e.g. auto on a cluster node, or ray://HOST:10001)") from None
            finally:
                signal.signal(signal.SIGTERM, handler)
        return ray

    def run(self, plan: RunPlan, jobs: list[Job], progress: bool, start: Start, finish: Finish) -> None:
        if not jobs:
            return
        ray = self.connect()
        task = ray.remote(_ray_job).options(num_cpus=self.cpus_per_job, num_gpus=self.gpus_per_job,
                                            max_retries=self.retries, retry_exceptions=False)
        threads = plan.execution.threads or max(1, int(self.cpus_per_job))
        shipped = dataclasses.replace(plan, episodes=None, execution=dataclasses.replace(plan.execution, threads=threads))
        device = plan.device.type  # "cuda", not the driver's "cuda:N": each worker uses the GPU Ray gives it
        pending: dict[Any, Job] = {}
        unsubmitted: list[Job] = []  # started (its record says running) but not yet a Ray task
        bar = tqdm(total=0, desc=f"{plan.suite.name} on Ray", disable=None if progress else True, unit="run")
        # One try around submission and waiting: a SIGTERM while the jobs are still being submitted
        # must leave no record `running` either (seen in CI: all three were, when it came between them).
        try:
            for job in jobs:
                if not start(job):
                    continue
                unsubmitted.append(job)
                job.record["executor"] = {"name": self.name, "address": self.address, "cpus_per_job": self.cpus_per_job,
                                          "gpus_per_job": self.gpus_per_job, "retries": self.retries,
                                          "driver": describe_host()}
                # An absolute path: a worker's working directory is not the driver's.
                checkpoint = str(job.checkpoint.resolve()) if job.checkpoint else None
                pending[task.remote(shipped, job.run, job.record, checkpoint, device)] = job
                unsubmitted.remove(job)
                bar.total += 1
                bar.refresh()
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker died more than --retries times, or Ray failed
                    record = job.record
                    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    record.update(status="failed", ended_at=records.utc_now(),
                                  error={"type": type(exc).__name__,
                                         "message": f"the Ray task failed after {self.retries + 1} attempt(s) "
                                                    f"(--retries {self.retries}): {first_line}"})
                    log.error("%s failed on Ray: %s", job.label, record["error"]["message"])
                finish(job, record)
                bar.update()
        except KeyboardInterrupt:
            for ref in pending:
                ray.cancel(ref, force=True)
            for job in [*pending.values(), *unsubmitted]:
                job.record.update(status="interrupted", ended_at=records.utc_now(),
                                  error={"type": "KeyboardInterrupt", "message": "interrupted while on Ray"})
                finish(job, job.record)
            raise
        finally:
            bar.close()


_worker_episodes: dict[str, Episodes] = {}  # per worker process: data is loaded once, not per task


def _ray_job(plan: RunPlan, run: PlannedRun, record: dict[str, Any], checkpoint: str | None, device: str) -> dict[str, Any]:
    """A Ray task: one run, computed on the worker and returned to the driver (which writes it)."""
    import ray


    plan = dataclasses.replace(plan, device=resolve_device(device))
    context = ray.get_runtime_context()
    record["executor"].update(node_id=context.get_node_id(), node_ip=ray.util.get_node_ip_address(),
                              worker=describe_host(), task_id=context.get_task_id())
    torch.set_num_threads(plan.execution.threads or 1)
    record["environment"] = environment(plan.device)  # the worker's, not the driver's
    key = plan.suite.model_dump_json() + str(plan.device)
    if key not in _worker_episodes:
        _worker_episodes.clear()
        _worker_episodes[key] = Episodes(plan.suite, plan.device)
    path = Path(checkpoint) if checkpoint else None
    if path is not None and not _writable(path.parent):
        log.warning("checkpoint directory %s is not writable on this node; the run keeps no checkpoints", path.parent)
        path = None
    return train_and_test(plan, run, _worker_episodes[key], record, path, progress=False)


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)
