"""`bench perf`: the table, the JSON rows and the stored record (quick configuration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.measure.perf import (
    Implementation,
    Setting,
    batch_for,
    copy_conv4_weights,
    perf_suite,
    plain_conv4,
    plain_name,
    render,
)

pytest.importorskip("learn2learn")


def test_perf_json_has_one_object_per_comparison_and_the_table_names_each(cli, tmp_path):
    code, out, err = cli("perf", "--quick", "--no-memory", "--format", "json", "--results-dir", str(tmp_path))
    assert code == 0, err
    rows = json.loads(out)
    for row in rows:
        assert {"name", "tasks_per_s", "speedup_vs_l2l", "peak_mem_mb", "max_grad_diff"} <= set(row)
    timed = [r for r in rows if r["tasks_per_s"] is not None]
    assert all(r["tasks_per_s"] > 0 for r in timed)
    ours = [r for r in timed if r["name"].startswith(("maml-ours", "fomaml-ours"))]
    assert ours and all(r["speedup_vs_l2l"] > 0 for r in ours)
    # every float32 path agrees with learn2learn in float64; bf16 autocast is reported, not held to it
    assert all(r["max_grad_diff"] <= 1e-10 for r in ours if not r["autocast"])
    assert any(r["autocast"] == "bf16" and r["max_grad_diff"] > 1e-6 for r in ours)
    (stored,) = (tmp_path / "perf").glob("perf-*.json")
    record = json.loads(stored.read_text())
    assert record["rows"] == rows
    assert record["environment"]["torch"] == torch.__version__
    assert record["configuration"]["meta_batch_size"] == 4
    assert 0 < record["compute_bound"]["tasks_per_s_at_matmul_peak"]
    profiled = [p["implementation"] for p in record["profiles"]]
    assert len(profiled) == 4 and "learn2learn" in profiled[-1] and any("chunk 1" in p for p in profiled)
    assert all(p["ops"] and all(0 <= op["share"] <= 1 for op in p["ops"]) for p in record["profiles"])
    floor = record["network_floor"]
    assert [v["tasks_per_call"] for v in floor["variants"]] == [1, 1, 1, 2, 4]  # l2l's network in 2 layouts; ours
    # learn2learn's meta-gradient contains its query step (and its support step and second-order terms besides)
    assert floor["max_speedup_vs_l2l"] > 1
    assert all(0 < r["share_of_floor"] for r in ours)
    learn2learn, per_task, chosen, grouped = record["test_time"]
    assert "learn2learn" in learn2learn["implementation"] and learn2learn["speedup_vs_l2l"] == 1.0
    assert per_task["speedup_vs_per_task"] == 1.0 and chosen["eval_chunk_choice"] in ("measured", "cached measurement")
    # the same weights adapted on the same episodes: at most one query of an episode flips on rounding
    assert all(row["max_score_diff_vs_l2l"] <= 100 / 15 for row in record["test_time"])
    # the table (the default --format) is this record rendered: every comparison is named in it
    table = render(record)
    for title in ("MAML second order, 1 step", "first-order MAML, 1 step", "ProtoNet", "Compute bound", "The query step alone",
                  "test-time adaptation"):
        assert title in table


def test_the_learn2learn_reference_network_is_our_conv4():
    """Same weights, same outputs: the comparison times two implementations of one network."""
    suite = perf_suite(quick=True)
    _, batch, _ = batch_for(suite, torch.device("cpu"))
    ours = Implementation(Setting("maml", "ours", quick=True), torch.device("cpu"), batch).ours.backbone
    plain = plain_conv4(suite.model.filters, suite.ways)
    copy_conv4_weights(ours, plain)
    assert {plain_name(n) for n, _ in ours.named_parameters()} == {n for n, _ in plain.named_parameters()}
    # in float64: float32 convolutions round differently by CPU (1e-4 apart on an AMD EPYC, within 1e-5 on a Xeon)
    x = batch.query_x[0].double()
    torch.testing.assert_close(plain.double()(x), ours.double()(x[None])[0], rtol=1e-10, atol=1e-10)


def test_peak_memory_is_measured_in_a_fresh_process():
    from bench.measure.perf import peak_memory_mb

    small = peak_memory_mb(Setting("maml", "ours", quick=True), torch.device("cpu"), 1)
    assert 0 < small < 2000


def test_perf_chunks_scores_each_choice_by_the_quiet_reference(tmp_path):
    """The benchmark's machinery (the timings themselves are `python -m bench perf-chunks`'s job)."""
    from bench.measure import perf_chunks

    record = perf_chunks.measure("sine", "smoke", ("maml",), load=1, choices=1, quiet_rounds=2)
    [row] = record["rows"]
    reference = {int(c): s for c, s in row["reference_seconds"].items()}
    assert sorted(reference) == [1, 2, 4, 8, 16, 25] and row["best"] == min(reference, key=reference.get)
    for rule in ("ours", "previous"):
        assert len(row[rule]["chunks"]) == 1
        assert row[rule]["ratios"] == [reference[c] / reference[row["best"]] for c in row[rule]["chunks"]]
        assert row[rule]["worst_ratio"] == max(row[rule]["ratios"]) >= 1.0
    assert record["passed"] == (row["ours"]["worst_ratio"] <= perf_chunks.TARGET)
    assert "| maml | " in perf_chunks.render(record)
    perf_chunks.save(record, tmp_path / "chunks.json")
    assert (tmp_path / "chunks.json").read_text().startswith("{")


def test_figures_are_kept_per_machine_newest_first_and_never_without_their_cpu_model():
    from bench.measure.perf import machine_of, newest_per_machine

    def record(at, name, identity=None, device="cpu"):
        return {"created_at": at, "environment": {"device": device, "device_name": name,
                                                  "cpu_identity": {"id": identity} if identity else None}}

    found = [(Path(f"{i}.json"), r) for i, r in enumerate([
        record("2026-01-01", "AMD EPYC"),  # before the CPU model was kept: superseded below
        record("2026-02-01", "AMD EPYC", "AuthenticAMD 25 1 1"),
        record("2026-03-01", "AMD EPYC", "AuthenticAMD 25 1 0"),  # another stepping, the same model: newer wins
        record("2026-02-15", "Intel Xeon", "GenuineIntel 6 106 6"),
        record("2026-02-20", "NVIDIA H200", None, "cuda:0"),
    ])]
    kept = newest_per_machine(found)
    assert [machine_of(r) for _, r in kept] == [("Intel Xeon", "GenuineIntel 6 106"), ("NVIDIA H200", None),
                                                ("AMD EPYC", "AuthenticAMD 25 1")]
    assert kept[-1][1]["created_at"] == "2026-03-01"


def test_test_time_adaptation_scores_equal_learn2learn_in_float64():
    """float32 rounding, amplified by 10 inner steps at Omniglot's inner rate, can flip a few queries
    (the perf table's score difference); in float64 every episode's score is learn2learn's."""
    from bench.measure.perf import l2l_test_time

    suite = perf_suite(quick=True)
    _, batch, _ = batch_for(suite, torch.device("cpu"))
    reference = Implementation(Setting("fomaml", "l2l", quick=True), torch.device("cpu"), batch, torch.float64)
    episodes = type(batch)(*(t.double() if t.is_floating_point() else t for t in batch.tensors()))
    for chunk in (1, len(episodes)):
        reference.ours.eval_chunk = chunk
        assert torch.equal(reference.ours.evaluate(episodes, 10), l2l_test_time(reference.learner, episodes, 10))
