from __future__ import annotations

import json

from bench.leaderboard import leaderboards, render
from bench.runner import execute, plan_run


def run(tmp_path, algorithms, seeds=(0,), overrides=()):
    plan = plan_run("sine", list(algorithms), list(seeds), "smoke", tmp_path, "cpu", list(overrides))
    return execute(plan, progress=False)


def test_seeds_aggregate_and_only_comparable_records_share_a_table(tmp_path):
    records = run(tmp_path, ["maml", "cnp"], seeds=(0, 1))
    run(tmp_path, ["maml"], overrides=["suite.test_inner_steps=1"])  # another protocol
    tables = leaderboards(tmp_path, "sine")
    assert len(tables) == 2
    by_steps = {d["protocol"]["test_inner_steps"]: t for d, t in tables}
    main = by_steps[10].set_index("algorithm")
    maml = [r["metric"]["mean"] for r in records if r["algorithm"]["name"] == "maml"]
    assert main.loc["maml", "mean"] == sum(maml) / 2
    assert main.loc["maml", "n_seeds"] == 2 and main.loc["maml", "seeds"] == "0,1"
    assert abs(main.loc["maml", "seed_std"] - abs(maml[0] - maml[1]) / 2**0.5) < 1e-12
    assert list(by_steps[1]["algorithm"]) == ["maml"]


def test_ranks_follow_the_metric_direction(tmp_path):
    run(tmp_path, ["maml", "cnp", "transfer"])
    [(description, table)] = leaderboards(tmp_path, "sine")
    assert description["lower_is_better"]
    assert list(table["mean"]) == sorted(table["mean"]) and list(table["rank"]) == [1, 2, 3]


def test_the_newest_record_of_a_seed_counts(tmp_path):
    run(tmp_path, ["maml"])
    [newer] = run(tmp_path, ["maml"], overrides=["maml.inner_lr=0.05"])
    [(_, table)] = leaderboards(tmp_path, "sine")
    assert table.loc[0, "mean"] == newer["metric"]["mean"]


def test_published_numbers_appear_only_under_their_protocol(tmp_path):
    run(tmp_path, ["maml"])
    run(tmp_path, ["maml"], overrides=["suite.test_inner_steps=1"])
    rows = json.loads(render(leaderboards(tmp_path, "sine"), "json"))
    published = {r["protocol_hash"]: r["published"] for r in rows}
    assert sorted(published.values()) == ["", "0.435 +- 0.039 (published (unverified): Li et al. 2017, Meta-SGD, Table 1 (K=10, one inner step))"]
