"""What makes records comparable (bench.identity): the keys of tables, leaderboard rows and jobs."""

from __future__ import annotations

from bench.identity import entry_identity, run_identity, table_identity


def test_autocast_and_compile_are_part_of_an_entry():
    base = {"algorithm": {"name": "maml", "hyperparameters": {}, "code_version": "c"}, "execution": {"task_chunk": 4}}
    assert entry_identity(base) == entry_identity({**base, "execution": {"task_chunk": 1}})
    assert entry_identity(base) != entry_identity({**base, "execution": {"autocast": "bf16"}})
    assert entry_identity(base) != entry_identity({**base, "execution": {"compile": True}})


def record(**changes):
    base = {"suite": {"name": "sine", "version": 1, "tier": "smoke", "protocol_hash": "p", "budget": {"meta_iterations": 10}},
            "algorithm": {"name": "maml", "hyperparameters": {"inner_lr": 0.01}, "code_version": "c"},
            "execution": {"task_chunk": 4}, "seeds": {"training_seed": 0}}
    for dotted, value in changes.items():
        part, key = dotted.split(".")
        base = {**base, part: {**base[part], key: value}}
    return base


def test_a_job_is_one_seed_of_one_entry_in_one_table():
    job = run_identity(record())
    assert run_identity(record(**{"execution.task_chunk": 1})) == job  # how fast, not what is computed
    for change in ({"seeds.training_seed": 1}, {"suite.tier": "standard"}, {"suite.budget": {"meta_iterations": 5}},
                   {"algorithm.hyperparameters": {"inner_lr": 0.02}}, {"algorithm.code_version": "d"},
                   {"execution.autocast": "bf16"}):
        assert run_identity(record(**change)) != job, change


def test_a_table_ignores_what_an_entry_holds():
    assert table_identity(record()) == table_identity(record(**{"algorithm.name": "cnp", "seeds.training_seed": 3}))
    assert table_identity(record()) != table_identity(record(**{"suite.protocol_hash": "q"}))
