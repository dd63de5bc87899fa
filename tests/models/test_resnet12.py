"""ResNet-12: shapes, per-task batch statistics, shared-only body, and which algorithms apply to it."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS, Problem
from bench.config import load_suite
from bench.errors import BenchError
from bench.models import ResNet12, build_backbone
from bench.run.runner import resolve_algorithms
from bench.seeding import generator
from bench.tasks import TaskBatch

SMALL = {"kind": "resnet12", "channels": [8, 8, 8, 8]}


def small_suite():
    return load_suite("omniglot-5w1s", tier="smoke", overrides={"model": SMALL})


def test_the_default_widths_give_resnet12s_parameter_count_and_feature_sizes():
    model = ResNet12((3, 84, 84), (64, 160, 320, 640), 5, generator("resnet12"))
    body = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("head_layer"))
    assert round(body / 1e6, 1) == 12.4  # as reported for MetaOptNet's and TADAM's ResNet-12
    assert model.feature_dim == 640 * 5 * 5
    assert ResNet12((1, 28, 28), (64, 160, 320, 640), 5, generator("resnet12")).feature_dim == 640


def test_construction_uses_only_the_given_generator():
    torch.manual_seed(1)
    state = torch.random.get_rng_state()
    first = ResNet12((1, 28, 28), (8, 8, 8, 8), 5, generator("resnet12")).state_dict()
    assert torch.equal(state, torch.random.get_rng_state())
    second = ResNet12((1, 28, 28), (8, 8, 8, 8), 5, generator("resnet12")).state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_batch_norm_uses_each_tasks_own_statistics():
    model = ResNet12((1, 28, 28), (8, 12, 16, 20), 5, generator("resnet12")).double()
    x = torch.rand(3, 7, 1, 28, 28, generator=generator("x"), dtype=torch.float64)
    together = model.functional(model.params(), x)
    alone = torch.cat([model.functional(model.params(), x[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 7, 5)
    torch.testing.assert_close(together, alone)


def test_a_per_task_body_runs_each_task_as_alone_and_a_copied_one_as_shared():
    model = ResNet12((1, 28, 28), (8, 12, 16, 20), 5, generator("resnet12")).double()
    x = torch.rand(3, 4, 1, 28, 28, generator=generator("x"), dtype=torch.float64)
    params = model.params()
    gen = generator("perturb")
    per_task = {k: v.expand(3, *v.shape) + 0.1 * torch.randn(3, *v.shape, generator=gen, dtype=torch.float64)
                for k, v in params.items()}
    for stats_from in (None, 2):
        together = model.functional(per_task, x, stats_from)
        for task in range(3):
            alone = model.functional({k: v[task] for k, v in per_task.items()}, x[task:task + 1], stats_from)
            torch.testing.assert_close(together[task:task + 1], alone, rtol=1e-10, atol=1e-10)
        copied = {k: v.expand(3, *v.shape) for k, v in params.items()}
        torch.testing.assert_close(model.functional(copied, x, stats_from), model.functional(params, x, stats_from),
                                   rtol=1e-10, atol=1e-10)
    weight = "blocks.0.conv1.weight"
    with pytest.raises(ValueError, match="blocks.0.conv1.weight has shape"):
        model.features({**params, weight: params[weight][:4]}, x)


def test_suites_validate_resnet12_and_its_batch_norm():
    suite = small_suite()
    assert isinstance(build_backbone(suite.model, (1, 28, 28), 5, generator("b")), ResNet12)
    with pytest.raises(BenchError, match="batch_norm must be"):
        load_suite("omniglot-5w1s", overrides={"model": SMALL, "batch_norm": "none"})


def test_every_algorithm_for_images_applies_to_resnet12_now_that_the_body_may_be_per_task():
    suite = small_suite()
    chosen, skipped = resolve_algorithms(suite, None)
    names = {a.name for a in chosen}
    assert {"protonet", "matchingnet", "metaoptnet.svm", "baseline", "anil", "maml", "reptile", "mamlpp"} <= names
    assert not any("resnet12" in reason for reason in skipped.values())


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "relationnet", "metaoptnet.ridge", "metaoptnet.svm",
                                  "baseline", "baselinepp", "anil", "maml", "fomaml", "reptile"])
def test_metric_and_transfer_methods_train_and_evaluate_on_resnet12(name):
    suite = small_suite()
    problem = Problem(suite=suite, in_shape=(1, 28, 28), out_features=5, n_train_classes=10)
    algorithm_cls = ALGORITHMS.get(name)
    algorithm = algorithm_cls(algorithm_cls.Hparams(**suite.algorithms.get(name, {})), problem, generator("test", name))
    gen = generator("batch")
    y = torch.arange(5).repeat_interleave(2).expand(2, -1)
    batch = TaskBatch(torch.rand(2, 10, 1, 28, 28, generator=gen), y, torch.rand(2, 10, 1, 28, 28, generator=gen), y,
                      support_classes=y, query_classes=y + 5)
    assert torch.isfinite(algorithm.meta_train_step(batch, 0))
    assert algorithm.evaluate(batch, algorithm.evaluation_steps(2)).shape == (2,)
