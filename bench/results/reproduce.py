"""``python -m bench reproduce RECORD ...``: rerun exactly what a record says, and compare.

From the record: the suite file and tier, its ``--set`` overrides (suite fields, and the
algorithm's), the budget, the hyperparameters, the training seed, and the execution options that
decide the arithmetic: task chunk, inner-step checkpointing, autocast, compile, torch threads, and
the device type. The rerun goes to a scratch results directory; its per-episode test values are
compared with the record's: bit-identical, or the largest difference. Where they differ, the
comparison names what differs between the two runs' setups (code version, git commit, torch,
device model, threads), which is where the contract in docs/reproducibility.md says bit-identity ends.

Nothing is rerun when the protocol cannot be rebuilt (the suite file changed what the episodes
are): that is bad input, said before any run.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bench import records
from bench.algorithms.base import parse_hparams
from bench.algorithms.gradient import EVAL_CHUNK
from bench.config import BUDGET_FIELDS, SUITES_DIR, load_suite
from bench.errors import BenchError
from bench.formatting import relative_path, significant
from bench.run.environment import PROJECT_ROOT, environment
from bench.run.execution import ExecutionOptions, recorded_eval_chunk
from bench.run.executors import execute
from bench.run.runner import RunPlan, plan_run

log = logging.getLogger(__name__)


@dataclass
class Reproduction:
    path: Path
    record: dict[str, Any]
    plan: RunPlan
    notes: list[str]  # where the rerun cannot be the record's own setup, decided before it runs


def _suite_source(record: dict[str, Any]) -> str:
    """The suite file the record names (relative to the project), else the suite by name."""
    stored = record["suite"].get("file")
    if stored:
        for candidate in (Path(stored), SUITES_DIR.parent / stored):  # records name it relative to that
            if candidate.is_file():
                return str(candidate)
    return record["suite"]["name"]


def prepare(path: Path, results_dir: Path) -> Reproduction:
    """The plan that reruns ``path``'s run; a ``BenchError`` (before any work) when it cannot."""
    record = records.load_record(path)
    if record.get("kind") == "evaluation":
        raise BenchError(f"{path} is an evaluation record (bench evaluate); reproduce the training record it names "
                         f"({(record.get('evaluation_of') or {}).get('record')}), then evaluate that again")
    if record["status"] != "completed":
        raise BenchError(f"{path}: a {record['status']} record has no results to reproduce; give a completed one")
    suite_record, algorithm = record["suite"], record["algorithm"]["name"]
    notes = []
    owned = [t for t in suite_record.get("overrides", [])
             if t.startswith("suite.") or t.partition("=")[0].rpartition(".")[0] == algorithm]
    source = _suite_source(record)
    suite = load_suite(source, tier=suite_record["tier"])
    budget = suite_record.get("budget") or {}
    # The tier's budget may have changed in the file since; the record's own budget is what ran.
    owned += [f"suite.{k}={json.dumps(v)}" for k, v in budget.items()
              if k in BUDGET_FIELDS and getattr(suite, k) != v and not any(t.startswith(f"suite.{k}=") for t in owned)]
    execution = record.get("execution") or {}
    if "execution" not in record:
        notes.append("the record predates task chunks: all tasks of a meta-batch together, as then")
    threads = record["environment"].get("torch_threads")
    # No chunk recorded: the run took all tasks of a meta-batch together (or its algorithm does not chunk).
    options = ExecutionOptions(task_chunk=execution.get("task_chunk") or suite_record["protocol"]["meta_batch_size"],
                               eval_chunk=recorded_eval_chunk(execution) or EVAL_CHUNK,
                               checkpoint_inner_steps=bool(execution.get("checkpoint_inner_steps")),
                               autocast=execution.get("autocast"), compile=bool(execution.get("compile", False)),
                               threads=threads if isinstance(threads, int) and threads > 0 else None,
                               checkpoint_every=0)
    device = str(record["environment"].get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        notes.append(f"recorded on {device}, rerun on cpu (no CUDA here)")
        device = "cpu"
    plan = plan_run(source, [algorithm], [record["seeds"]["training_seed"]], suite_record["tier"], results_dir,
                    device, owned, options)
    if plan.suite.protocol_hash() != suite_record["protocol_hash"]:
        raise BenchError(f"{path}: the suite's protocol is now {plan.suite.protocol_hash()}, the record's "
                         f"{suite_record['protocol_hash']} ({source} changed what its episodes are): it cannot be rerun "
                         "as recorded; check out the commit the record names "
                         f"({(record['environment'].get('git') or {}).get('commit') or 'unknown'})")
    if plan.suite.budget() != budget and budget:
        raise BenchError(f"{path}: cannot rebuild the record's budget {budget} (got {plan.suite.budget()})")
    run = plan.runs[0]
    hparams = parse_hparams(run.algorithm, record["algorithm"]["hyperparameters"], str(path))
    plan = replace(plan, runs=(replace(run, hparams=hparams),))
    if suite_record.get("file_sha256") and plan.suite.file_sha256 != suite_record["file_sha256"]:
        notes.append("the suite file's bytes changed since the record (same protocol and budget)")
    return Reproduction(path, record, plan, notes)


SETUP = {  # what the contract says bit-identity depends on, and where each record keeps it
    "algorithm code version": lambda r: r["algorithm"].get("code_version"),
    "git commit": lambda r: (r["environment"].get("git") or {}).get("commit"),
    "uncommitted changes": lambda r: (r["environment"].get("git") or {}).get("dirty"),
    "torch": lambda r: r["environment"].get("torch"),
    "device": lambda r: r["environment"].get("device_name"),
    "CPU (instruction set, vendor family model stepping)": lambda r: (
        ((r["environment"].get("cpu_identity") or {}).get("capability"), (r["environment"].get("cpu_identity") or {}).get("id"))
        if str(r["environment"].get("device", "cpu")).startswith("cpu") else None),
    "torch threads": lambda r: r["environment"].get("torch_threads"),
    "task chunk": lambda r: (r.get("execution") or {}).get("task_chunk"),
    "evaluation chunk": lambda r: recorded_eval_chunk(r.get("execution") or {}) or EVAL_CHUNK,  # None meant EVAL_CHUNK
}


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per-episode identity of two completed records of one run, and how their setups differ."""
    a, b = old["metric"]["per_task"], new["metric"]["per_task"]
    same_episodes = records.test_episodes_differ([old, new]) is None
    if a is None or b is None or len(a) != len(b):
        differences = None
    else:
        differences = [abs(x - y) for x, y in zip(a, b, strict=True)]
    identical = differences is not None and a == b
    setup = {name: [get(old), get(new)] for name, get in SETUP.items() if get(old) != get(new)}
    curve = [p.get("val_metric") for p in (old["training"].get("curve") or [])]
    new_curve = [p.get("val_metric") for p in (new["training"].get("curve") or [])]
    return {
        "identical": identical,
        "same_test_episodes": same_episodes,
        "max_abs_difference": max(differences) if differences else (0.0 if differences == [] else None),
        "episodes_differing": sum(d != 0 for d in differences) if differences is not None else None,
        "n_episodes": len(a) if a is not None else None,
        "mean": [old["metric"]["mean"], new["metric"]["mean"]],
        "same_validation_curve": curve == new_curve,
        # Records from before the hash was kept have none: None, not False.
        "same_model": (old["training"]["state_sha256"] == new["training"].get("state_sha256")
                       if old["training"].get("state_sha256") else None),
        "best_iteration": [old["training"].get("best_iteration"), new["training"].get("best_iteration")],
        "setup_differences": setup,
    }


def reproduce(paths: list[Path], results_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Rerun every record of ``paths`` (all checked before the first runs) and compare each."""
    scratch = Path(results_dir) if results_dir is not None else Path(tempfile.mkdtemp(prefix="bench-reproduce-"))
    prepared = [prepare(Path(p), scratch) for p in paths]
    rows = []
    for item in prepared:
        log.info("reproducing %s", item.path)
        [new] = execute(item.plan, progress=progress)
        row: dict[str, Any] = {"record": relative_path(item.path, Path.cwd()), "rerun": new.get("_path"), "notes": item.notes,
                               "algorithm": item.record["algorithm"]["name"], "suite": item.record["suite"]["name"],
                               "tier": item.record["suite"]["tier"], "seed": item.record["seeds"]["training_seed"]}
        if new["status"] != "completed":
            row.update(identical=False, status=new["status"], error=(new.get("error") or {}).get("message"))
        else:
            row.update(status="completed", **compare(item.record, new))
        rows.append(row)
    return {"environment": environment(torch.device("cpu")), "results_dir": str(scratch), "rows": rows,
            "all_identical": all(r["identical"] for r in rows)}


def shown_path(path: str) -> str:
    """A record's path as the project names it, wherever the checkout was: relative to the project,
    else from its ``results/`` folder on (summaries written before paths were stored relative kept
    the absolute path of the checkout that wrote them)."""
    shown = relative_path(Path(path), PROJECT_ROOT)
    parts = Path(shown).parts
    if Path(shown).is_absolute() and "results" in parts:
        return Path(*parts[len(parts) - 1 - parts[::-1].index("results"):]).as_posix()
    return shown


def render(summary: dict[str, Any], scratch: bool = True) -> str:
    lines = ["| record | run | per-episode test values | max abs difference | mean: record -> rerun | "
             "what differs from the record's setup |", "|---|---|---|--:|---|---|"]
    for row in summary["rows"]:
        run = f"{row['suite']} {row['tier']} {row['algorithm']} seed {row['seed']}"
        row = {**row, "record": shown_path(row["record"])}
        if row["status"] != "completed":
            lines.append(f"| {row['record']} | {run} | rerun {row['status']}: {row.get('error')} | | | |")
            continue
        verdict = "bit-identical" if row["identical"] else (
            f"differ in {row['episodes_differing']} of {row['n_episodes']}" if row["max_abs_difference"] is not None
            else "not comparable")
        if not row["same_test_episodes"]:
            verdict += " (other test episodes!)"
        setup = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in row["setup_differences"].items())
        setup = "; ".join(x for x in (setup, *row["notes"]) if x) or "nothing"
        old, new = row["mean"]
        lines.append(f"| {row['record']} | {run} | {verdict} | {significant(row['max_abs_difference'])} | "
                     f"{old:.6g} -> {new:.6g} | {setup} |")
    verdict = ("all reruns bit-identical to their records" if summary["all_identical"]
               else "some reruns differ from their records (see why in the last column)")
    return "\n".join([*lines, "", verdict + (f"; reruns kept under {summary['results_dir']}" if scratch else "")])

