from __future__ import annotations

import json

from bench.results.leaderboard import average_ranks, leaderboards, render
from bench.run.executors import execute
from bench.run.runner import plan_run
from bench.stats import ALPHA, paired_p_value


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


def test_ranks_follow_the_metric_direction_and_ties_follow_the_paired_test(tmp_path):
    records = run(tmp_path, ["maml", "cnp", "transfer", "fomaml"])
    [(description, table)] = leaderboards(tmp_path, "sine")
    assert description["lower_is_better"] and "paired t-test" in description["tie_test"]
    assert list(table["mean"]) == sorted(table["mean"])
    per_task = {r["algorithm"]["name"]: r["metric"]["per_task"] for r in records}
    order = list(table["algorithm"])
    for position, (algorithm, rank_value, group) in enumerate(zip(order, table["rank"], table["tie_group"], strict=True)):
        members = [i for i, g in enumerate(table["tie_group"]) if g == group]
        assert rank_value == sum(i + 1 for i in members) / len(members)
        leader = order[members[0]]
        assert position == members[0] or paired_p_value(per_task[leader], per_task[algorithm]) >= ALPHA
        if position == members[-1] and position + 1 < len(order):  # the next entry differs from this group's leader
            assert paired_p_value(per_task[leader], per_task[order[position + 1]]) < ALPHA


def test_identical_results_tie(tmp_path):
    run(tmp_path, ["maml", "maml.l2l"], overrides=["maml.inner_steps=1", "maml.l2l.inner_steps=1"])
    [(_, table)] = leaderboards(tmp_path, "sine")
    assert set(table["tie_group"]) == {1} and set(table["rank"]) == {1.5}


def test_average_rank_across_tables(tmp_path):
    run(tmp_path, ["maml", "cnp"])
    run(tmp_path, ["maml", "cnp"], overrides=["suite.test_inner_steps=1"])
    boards = leaderboards(tmp_path, "sine")
    frame = average_ranks(boards).set_index("algorithm")
    for algorithm in ("maml", "cnp"):
        expected = sum(float(t.set_index("algorithm").loc[algorithm, "rank"]) for _, t in boards) / 2
        assert frame.loc[algorithm, "average_rank"] == expected and frame.loc[algorithm, "n_tables"] == 2


def test_published_numbers_appear_only_under_their_protocol(tmp_path):
    run(tmp_path, ["maml"])
    run(tmp_path, ["maml"], overrides=["suite.test_inner_steps=1"])
    rows = json.loads(render(leaderboards(tmp_path, "sine"), "json"))
    published = {r["protocol_hash"]: r["published"] for r in rows}
    assert sorted(published.values()) == [
        "", "0.435 +- 0.039 (published (unverified): Li et al. 2017, Meta-SGD, Table 1 (K=10, one inner step))"]
    [shown] = [r for r in rows if r["published"]]
    assert shown["published_value"] == 0.435 and shown["published_diff"] == shown["mean"] - 0.435
    assert [r["published_diff"] for r in rows if not r["published"]] == [None]
