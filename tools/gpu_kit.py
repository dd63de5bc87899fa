"""The GPU kit's measurements and summary (``tools/gpu_check.sh`` calls it; docs/verification.md).

``timing DEVICE OUT.json [--quick]``: meta-training steps of second-order MAML on the Omniglot 5w1s
paper configuration, each timed by bench's ``SegmentTimer`` (CUDA events on a GPU) and by a wall
clock with the device synchronised before and after; the two must agree.

``iterations PERF_RECORD SECONDS [--default N]``: how many meta-iterations of that configuration fit
in SECONDS at the rate the kit's ``bench perf`` measured (so the run's budget is a number in its
record, not a stopwatch).

``summary OUT_DIR RECORDS_DIR``: one Markdown and one JSON summary of the kit's steps, tests, perf
comparison, timing agreement and runs (with the published numbers beside ours).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timing(device_name: str, out: Path, quick: bool) -> dict[str, Any]:
    import torch

    from bench.measure.perf import Implementation, Setting, batch_for, perf_suite
    from bench.run.timing import SegmentTimer

    device = torch.device(device_name)
    _, batch, source = batch_for(perf_suite(quick), device)
    step = Implementation(Setting("maml", "ours", quick=quick), device, batch)
    step.choose_chunk()  # as bench's runs do: measured once, then cached

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(2):  # warm-up: kernel choice and allocation
        step.step()
    synchronize()
    timer, walls = SegmentTimer(device), []
    for _ in range(3 if quick else 10):
        synchronize()
        started = time.perf_counter()
        timer.start()
        step.step()
        timer.stop()
        synchronize()
        walls.append(time.perf_counter() - started)
    # The same steps back to back, synchronised only once at the end, as bench times its runs.
    unsynced, started = SegmentTimer(device), time.perf_counter()
    for _ in range(len(walls)):
        unsynced.start()
        step.step()
        unsynced.stop()
    total = unsynced.seconds()
    back_to_back_wall = time.perf_counter() - started
    events = timer.segment_seconds()
    result = {
        "device": str(device), "method": timer.method, "batch": source, "steps": len(walls),
        "timer_seconds": events, "synchronised_wall_seconds": walls,
        "median_ratio": statistics.median(e / w for e, w in zip(events, walls, strict=True)),
        "back_to_back": {"timer_seconds": total, "wall_seconds": back_to_back_wall, "ratio": total / back_to_back_wall},
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result


def iterations(perf_record: Path, seconds: float, default: int) -> int:
    """Meta-iterations of the paper configuration's MAML (one step) that fit in ``seconds``."""
    try:
        record = json.loads(perf_record.read_text())
        meta_batch = record["configuration"]["meta_batch_size"]
        rate = next(r["tasks_per_s"] for r in record["rows"] if r["name"] == "maml-ours-1step")
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        return default
    return max(1, min(60000, math.floor(seconds * rate / meta_batch)))


def _tests(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {"ran": False}
    suite = ElementTree.parse(path).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    failures = [{"test": case.get("name"), "message": (problem.get("message") or "")[:500]}
                for case in suite.iter("testcase") for problem in (*case.findall("failure"), *case.findall("error"))]
    return {"ran": True, "tests": int(suite.get("tests", 0)), "failed": len(failures),
            "skipped": int(suite.get("skipped", 0)), "seconds": float(suite.get("time", 0)), "failures": failures}


def _perf(records_dir: Path) -> dict[str, Any] | None:
    found = sorted((records_dir / "perf").glob("perf-*.json"))
    if not found:
        return None
    record = json.loads(found[-1].read_text())
    keep = ("name", "comparison", "implementation", "tasks_per_s", "speedup_vs_l2l", "peak_mem_mb", "memory_vs_l2l",
            "max_grad_diff", "task_chunk")
    return {"record": found[-1].name, "device": record["environment"].get("device_name"),
            "matmul_gflops": record.get("matmul_gflops"), "rows": [{k: r.get(k) for k in keep} for r in record["rows"]]}


def _runs(records_dir: Path) -> list[dict[str, Any]]:
    from bench import records
    from bench.config import load_suite

    rows = []
    for path in records.iter_record_paths(records_dir):
        record = records.load_record(path)
        if "algorithm" not in record:
            continue
        suite = load_suite(record["suite"]["name"])
        published = next(({"value": p.value, "ci95": p.ci95, "source": p.source, "label": p.label}
                          for p in suite.published if p.algorithm == record["algorithm"]["name"]), None)
        metric, timing = record.get("metric") or {}, record.get("timing") or {}
        rows.append({
            "record": str(path.relative_to(records_dir)), "algorithm": record["algorithm"]["name"],
            "suite": record["suite"]["name"], "tier": record["suite"]["tier"], "status": record["status"],
            "device": record["environment"].get("device_name"),
            "meta_iterations": (record.get("training") or {}).get("meta_iterations"),
            "mean": metric.get("mean"), "ci95": metric.get("ci95"),
            "meta_train_tasks_per_s": timing.get("meta_train_tasks_per_s"), "wall_time_s": timing.get("wall_time_s"),
            "peak_mem_mb": (record.get("memory") or {}).get("peak_mb"),
            "published": published,
        })
    return rows


def summary(out_dir: Path, records_dir: Path) -> dict[str, Any]:
    steps = []
    steps_file = out_dir / "steps.txt"
    for line in steps_file.read_text().splitlines() if steps_file.is_file() else []:
        name, code, seconds = line.split()
        steps.append({"step": name, "exit_code": int(code), "seconds": int(seconds)})
    timing_file = out_dir / "timing.json"
    result = {
        "steps": steps, "tests": _tests(out_dir / "tests.xml"), "perf": _perf(records_dir),
        "timing": json.loads(timing_file.read_text()) if timing_file.is_file() else None, "runs": _runs(records_dir),
    }
    (out_dir / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    (out_dir / "summary.md").write_text(render(result))
    return result


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def render(result: dict[str, Any], level: int = 1) -> str:
    """The summary in Markdown, its title at heading ``level`` (its sections one below)."""
    title, section = "#" * level, "#" * (level + 1)
    lines = [f"{title} GPU kit summary", "", "| step | exit code | seconds |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['exit_code']} | {s['seconds']} |" for s in result["steps"]]
    tests = result["tests"]
    lines += ["", f"{section} Device tests (`pytest -m device`)", ""]
    if tests["ran"]:
        lines.append(f"{tests['tests']} tests, {tests['failed']} failed, {tests['skipped']} skipped, "
                     f"{tests['seconds']:.0f} s.")
        lines += [f"- FAILED {f['test']}: {f['message']}" for f in tests["failures"]]
    else:
        lines.append("not run")
    perf = result["perf"]
    lines += ["", f"{section} `bench perf` (ours against learn2learn, side by side in one run)", ""]
    if perf:
        lines += [f"Device {perf['device']}, matmul {_fmt(perf['matmul_gflops'], '.0f')} GFLOP/s; record {perf['record']}.",
                  "", "| comparison | implementation | tasks/s | vs learn2learn | peak MB | memory vs l2l | "
                  "float64 max grad diff |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['comparison']} | {r['implementation']} | {_fmt(r['tasks_per_s'])} | {_fmt(r['speedup_vs_l2l'])} | "
                  f"{_fmt(r['peak_mem_mb'], '.0f')} | {_fmt(r['memory_vs_l2l'])} | {_fmt(r['max_grad_diff'], '.1e')} |"
                  for r in perf["rows"]]
    else:
        lines.append("no perf record")
    timing_result = result["timing"]
    lines += ["", f"{section} Timer against a synchronised wall clock", ""]
    if timing_result:
        lines.append(f"{timing_result['method']} on {timing_result['device']}, {timing_result['steps']} MAML steps "
                     f"({timing_result['batch']}): median timer/wall per step {timing_result['median_ratio']:.3f}; "
                     f"back to back {timing_result['back_to_back']['ratio']:.3f}.")
    else:
        lines.append("not measured")
    lines += ["", f"{section} Runs", "", "| algorithm | suite | tier | status | device | meta-iterations | ours | published | "
              "meta-train tasks/s | wall s | peak MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        ours = "-" if run["mean"] is None else f"{run['mean']:.2f} +- {run['ci95']:.2f}"
        published = run["published"]
        theirs = "-" if not published else f"{published['value']} ({published['source']})"
        lines.append(f"| {run['algorithm']} | {run['suite']} | {run['tier']} | {run['status']} | {run['device']} | "
                     f"{run['meta_iterations']} | {ours} | {theirs} | {_fmt(run['meta_train_tasks_per_s'])} | "
                     f"{_fmt(run['wall_time_s'], '.0f')} | {_fmt(run['peak_mem_mb'], '.0f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing_parser = commands.add_parser("timing")
    timing_parser.add_argument("device")
    timing_parser.add_argument("out", type=Path)
    timing_parser.add_argument("--quick", action="store_true")
    iterations_parser = commands.add_parser("iterations")
    iterations_parser.add_argument("perf_record", type=Path)
    iterations_parser.add_argument("seconds", type=float)
    iterations_parser.add_argument("--default", type=int, default=200)
    summary_parser = commands.add_parser("summary")
    summary_parser.add_argument("out_dir", type=Path)
    summary_parser.add_argument("records_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "timing":
        print(json.dumps(timing(args.device, args.out, args.quick)["back_to_back"]))
    elif args.command == "iterations":
        print(iterations(args.perf_record, args.seconds, args.default))
    else:
        print(render(summary(args.out_dir, args.records_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
