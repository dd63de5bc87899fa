"""The GPU kit (tools/gpu_check.sh) runs every step on CPU with a tiny budget, so that it cannot rot
between the sessions that are lent a GPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import pytest

from tests.conftest import HAS_OMNIGLOT, ROOT


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")
def test_the_gpu_kit_runs_every_step_and_brings_back_what_the_device_tool_can(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable,
           "KIT_TESTS": "tests/run/test_device.py -k segment_timings_agree"}
    done = subprocess.run(["bash", "tools/gpu_check.sh", "--device", "cpu", "--budget", "tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1200)
    log = (out / "kit.log").read_text() if (out / "kit.log").is_file() else ""
    assert done.returncode == 0, done.stdout + done.stderr + log[-4000:]

    summary = json.loads((out / "summary.json").read_text())
    assert [(s["step"], s["exit_code"]) for s in summary["steps"]] == [
        ("tests", 0), ("perf", 0), ("timing", 0), ("protonet", 0), ("maml", 0)]
    assert summary["tests"]["tests"] == 1 and summary["tests"]["failed"] == 0
    perf = {row["name"]: row for row in summary["perf"]["rows"]}
    assert perf["maml-ours-1step"]["tasks_per_s"] > 0 and perf["maml-ours-1step"]["max_grad_diff"] < 1e-10
    assert summary["timing"]["method"] == "perf_counter" and 0.95 < summary["timing"]["median_ratio"] <= 1.0
    runs = {run["algorithm"]: run for run in summary["runs"]}
    assert {name: run["status"] for name, run in runs.items()} == {"protonet": "completed", "maml": "completed"}
    assert runs["protonet"]["published"]["value"] == 98.8 and runs["maml"]["published"]["value"] == 98.7
    assert runs["protonet"]["meta_iterations"] == 4 and runs["maml"]["meta_iterations"] >= 1
    markdown = (out / "summary.md").read_text()
    assert "| protonet | omniglot-5w1s | smoke | completed |" in markdown and "98.8 (Snell et al. 2017" in markdown

    with tarfile.open(out / "records.tar.gz") as archive:
        names = archive.getnames()
    assert sum(n.endswith(".json") and "/omniglot-5w1s/smoke/" in n for n in names) == 2
    assert any(re.search(r"perf/perf-.*\.json$", n) for n in names)
    # What the device tool brings back: at most 8 files, at most 2 folders down, plain names.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files)

    # Committed as results/gpu/FOLDER/ with the archive unpacked, it makes the README's and the docs' GPU tables.
    folder = tmp_path / "results" / "gpu" / "kit-run"
    shutil.copytree(out, folder)
    with tarfile.open(out / "records.tar.gz") as archive:
        archive.extractall(folder / "records", filter="data")
    sys.path.insert(0, str(ROOT / "tools"))
    import update_readme

    compact = update_readme.gpu_block(tmp_path / "results", compact=True)
    assert "| protonet (omniglot-5w1s, smoke) | 4 |" in compact and "98.8 (Snell et al. 2017, Table 1)" in compact
    assert "tests passed, perf passed, timing passed, protonet passed, maml passed" in compact
    full = update_readme.gpu_block(tmp_path / "results", compact=False)
    assert "### GPU kit summary" in full and "#### Runs" in full and "`results/gpu/kit-run/`" in full


def test_the_kit_refuses_an_unknown_option_before_any_step(tmp_path):
    done = subprocess.run(["bash", "tools/gpu_check.sh", "--budget", "huge"], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OUT": str(tmp_path / "out")})
    assert done.returncode == 2 and "--budget huge: expected full or tiny" in done.stderr
    assert not (tmp_path / "out").exists()


def test_the_maml_budget_is_what_fits_at_the_measured_rate(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    import gpu_kit

    record = tmp_path / "perf.json"
    record.write_text(json.dumps({"configuration": {"meta_batch_size": 32},
                                  "rows": [{"name": "maml-ours-1step", "tasks_per_s": 640.0}]}))
    assert gpu_kit.iterations(record, 100, default=7) == 2000  # 100 s x 640 tasks/s / 32 tasks
    assert gpu_kit.iterations(record, 1e6, default=7) == 60000  # never beyond the paper's length
    assert gpu_kit.iterations(tmp_path / "missing.json", 100, default=7) == 7


def test_no_step_runs_past_the_kit_s_deadline_and_the_summary_is_still_written(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "KIT_DEADLINE_S": "17"}
    done = subprocess.run(["bash", "tools/gpu_check.sh", "--device", "cpu", "--budget", "tiny"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == 124, done.stdout + done.stderr
    assert [s["step"] for s in summary["steps"]] == ["tests", "perf", "timing", "protonet", "maml"]
    assert all(s["exit_code"] == 124 for s in summary["steps"]) and sum(s["seconds"] for s in summary["steps"]) <= 5
    assert "not run, the kit's deadline (17 s) is reached" in (out / "kit.log").read_text()
    assert (out / "records.tar.gz").is_file()
