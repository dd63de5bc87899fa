from __future__ import annotations

import math

import torch

from bench.config import load_suite
from bench.tasks import episode_hash, make_task_source


def source(name="sine"):
    return make_task_source(load_suite(name, tier="smoke"))


def test_an_episode_is_a_pure_function_of_split_seed_and_index():
    tasks = source()
    together = tasks.batch("test", 0, range(10))
    for index in (9, 0, 4):  # any order, alone
        alone = tasks.batch("test", 0, range(index, index + 1))
        for a, b in zip(together.slice(index, index + 1).tensors(), alone.tensors(), strict=True):
            assert torch.equal(a, b)
    assert episode_hash(tasks.batch("test", 0, range(10))) == episode_hash(together)


def test_splits_seeds_and_suites_give_different_episodes():
    tasks = source()
    reference = episode_hash(tasks.batch("test", 0, range(5)))
    assert reference != episode_hash(tasks.batch("val", 0, range(5)))
    assert reference != episode_hash(tasks.batch("test", 1, range(5)))
    assert reference != episode_hash(source("sine-k5").batch("test", 0, range(5)))


def test_episodes_follow_the_protocol_distribution():
    tasks = source()
    batch = tasks.batch("train", 3, range(2000))
    assert batch.support_x.shape == (2000, 10, 1) and batch.query_x.shape == (2000, 10, 1)
    x = torch.cat([batch.support_x, batch.query_x], 1)
    y = torch.cat([batch.support_y, batch.query_y], 1)
    assert x.min() >= -5 and x.max() <= 5 and abs(x.mean()) < 0.1
    # Recover amplitude and phase per task by least squares on sin(x), cos(x): y = a sin x + b cos x.
    design = torch.stack([torch.sin(x), torch.cos(x)], -1).squeeze(-2).double()
    coef = torch.linalg.lstsq(design, y.double()).solution.squeeze(-1)
    amplitude = coef.norm(dim=1)
    phase = torch.atan2(-coef[:, 1], coef[:, 0])
    assert amplitude.min() >= 0.1 - 1e-4 and amplitude.max() <= 5.0 + 1e-4
    assert abs(amplitude.mean() - 2.55) < 0.1  # mean of U[0.1, 5]
    assert phase.min() >= -1e-4 and phase.max() <= math.pi + 1e-4
    assert torch.allclose(torch.einsum("btk,bk->bt", design, coef).float(), y.squeeze(-1), atol=1e-4)


def test_no_global_rng_state_is_used_or_changed():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = source().batch("train", 0, range(3))
    assert torch.equal(before, torch.random.get_rng_state())
    torch.manual_seed(456)
    b = source().batch("train", 0, range(3))
    assert all(torch.equal(x, y) for x, y in zip(a.tensors(), b.tensors(), strict=True))


def test_the_contents_hash_covers_every_episode_whatever_the_chunks():
    from hashlib import sha256

    batch = source().batch("test", 0, range(10))
    whole, pieces = sha256(), sha256()
    batch.update_contents_hash(whole)
    for start in (0, 3, 4):
        batch.slice(start, {0: 3, 3: 4, 4: 10}[start]).update_contents_hash(pieces)
    assert whole.hexdigest() == pieces.hexdigest()
    changed = batch.slice(0, 10)
    changed.query_y[9, 0] += 1e-6
    other = sha256()
    changed.update_contents_hash(other)
    assert other.hexdigest() != whole.hexdigest()
