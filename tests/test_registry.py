from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import textwrap

import pytest

import bench.algorithms
from bench.algorithms import ALGORITHMS, Algorithm
from bench.errors import BenchError
from bench.registry import Registry


def test_unknown_name_suggests_the_closest():
    with pytest.raises(BenchError, match=r"unknown algorithm 'mamll'; did you mean 'maml'"):
        ALGORITHMS.get("mamll")


def test_unknown_name_far_from_everything_lists_what_exists():
    with pytest.raises(BenchError, match="known: .*maml"):
        ALGORITHMS.get("zzzzzzzz")


def test_duplicate_names_are_refused():
    registry: Registry[int] = Registry("thing")
    registry.register("a")(1)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a")(2)


def test_wildcards():
    assert ALGORITHMS.names("maml*") == ["maml", "maml.l2l", "mamlpp"]


@pytest.mark.parametrize("module_info", list(pkgutil.iter_modules(bench.algorithms.__path__)), ids=lambda m: m.name)
def test_every_algorithm_file_registers_something_or_is_a_shared_base(module_info):
    module = importlib.import_module(f"bench.algorithms.{module_info.name}")
    registered = {ALGORITHMS.get(name) for name in ALGORITHMS.names()}
    defined_here = [obj for obj in vars(module).values()
                    if isinstance(obj, type) and issubclass(obj, Algorithm) and obj.__module__ == module.__name__]
    if module_info.name in {"base", "embedding", "gradient", "heads", "l2l_reference", "sentence"}:
        assert not set(defined_here) & registered
    else:
        assert set(defined_here) & registered, f"{module.__name__} registers no algorithm"


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_every_algorithm_opens_its_docstring_with_a_paper_and_names_its_capabilities(name):
    algorithm = ALGORITHMS.get(name)
    module_doc = sys.modules[algorithm.__module__].__doc__
    assert module_doc and ("http" in module_doc), f"{name}: module docstring should cite the paper with a link"
    assert algorithm.summary(), f"{name}: class docstring is empty"
    assert algorithm.task_types and algorithm.family


PLUGIN = '''
"""Plugin used by the test suite: a predictor that always outputs zero."""
import torch
from bench.algorithms import Algorithm, Hyperparameters, register


@register("zero-plugin")
class Zero(Algorithm):
    """Predicts zero everywhere (a test plugin)."""

    family = "baseline"

    def meta_train_step(self, batch, iteration):
        return torch.zeros(())

    def evaluate(self, batch, inner_steps):
        return self.problem.metric(torch.zeros_like(batch.query_y), batch.query_y)
'''


def installed_plugin(tmp_path, package: str, code: str, group: str, name: str) -> dict[str, str]:
    """``code`` as package ``package`` with entry point ``name`` in ``group``, pip-installed into a
    folder of its own; returns the environment whose PYTHONPATH has it."""
    source = tmp_path / "src"
    (source / package).mkdir(parents=True)
    (source / package / "__init__.py").write_text(code)
    (source / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{package.replace('_', '-')}"
        version = "0.0.1"
        [project.entry-points."{group}"]
        {name} = "{package}"
    """))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path])}


@pytest.mark.slow
def test_third_party_package_registers_through_the_entry_point_group(tmp_path, cli):
    env = installed_plugin(tmp_path, "bench_zero_plugin", PLUGIN, "bench.algorithms", "zero-plugin")
    listing = subprocess.run([sys.executable, "-m", "bench", "list", "--format", "json"],
                             capture_output=True, text=True, env=env, check=True)
    algorithms = {a["name"]: a for a in json.loads(listing.stdout)["algorithms"]}
    assert algorithms["zero-plugin"]["module"] == "bench_zero_plugin"
    results = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench", "-q", "run", "sine", "--tier", "smoke", "--algorithms",
                          "zero-plugin", "--results-dir", str(results)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "zero-plugin" in run.stdout
    # Without the plugin on the path, the name is unknown again.
    code, _, err = cli("run", "sine", "--algorithms", "zero-plugin", "--results-dir", str(results))
    assert code == 2 and "unknown algorithm 'zero-plugin'" in err


DATA_PLUGIN = '''
"""A data kind from a plugin: few-shot regression on lines y = slope * x + intercept."""
import torch
from pydantic import Field

from bench.config import DataPlugin, register_data_kind
from bench.seeding import derive_seed
from bench.tasks.base import TaskBatch


@register_data_kind("lines", source="bench_lines_plugin:LineTasks")
class LinesData(DataPlugin):
    slope_range: tuple[float, float] = (-2.0, 2.0)
    noise: float = Field(default=0.0, ge=0)


class LineTasks:
    eval_chunk = None
    in_shape = (1,)

    def __init__(self, suite, device):
        self.suite_name, self.config = suite.name, suite.data
        self.shots, self.queries = suite.shots, suite.queries

    def batch(self, split, seed, indices):
        n, (lo, hi) = self.shots + self.queries, self.config.slope_range
        x, y = torch.empty(len(indices), n, 1), torch.empty(len(indices), n, 1)
        gen = torch.Generator()
        for row, index in enumerate(indices):
            gen.manual_seed(derive_seed(self.suite_name, split, seed, index))
            x[row] = torch.rand(n, 1, generator=gen) * 10 - 5
            slope = lo + (hi - lo) * torch.rand(1, generator=gen)
            y[row] = slope * x[row] + self.config.noise * torch.randn(n, 1, generator=gen)
        return TaskBatch(x[:, :self.shots], y[:, :self.shots], x[:, self.shots:], y[:, self.shots:])
'''
LINES_SUITE = """\
name: lines
version: 1
description: "a plugin's data kind"
task_type: regression
protocol: lines-test
data: {kind: lines, slope_range: [-3, 3]}
model: {kind: mlp, hidden: [20, 20]}
metric: mse
shots: 5
queries: 10
meta_batch_size: 4
meta_iterations: 30
val_every: 15
val_tasks: 10
test_tasks: 20
test_inner_steps: 3
seeds: [0]
tiers: {smoke: {}, standard: {}, paper: {}}
"""


@pytest.mark.slow
def test_third_party_package_adds_a_data_kind_through_the_entry_point_group(tmp_path, cli):
    env = installed_plugin(tmp_path, "bench_lines_plugin", DATA_PLUGIN, "bench.data", "lines")
    suite = tmp_path / "lines.yaml"
    suite.write_text(LINES_SUITE)
    results = tmp_path / "results"

    def bench(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bench", "-q", *args], capture_output=True, text=True, env=env)

    assert bench("validate", str(suite)).returncode == 0
    run = bench("run", str(suite), "--algorithms", "maml,cnp", "--results-dir", str(results))
    assert run.returncode == 0, run.stderr
    stored = [json.loads(p.read_text()) for p in sorted(results.rglob("*.json"))]
    assert sorted(r["algorithm"]["name"] for r in stored) == ["cnp", "maml"]
    assert all(r["status"] == "completed" and r["suite"]["protocol"]["data"] == {
        "kind": "lines", "slope_range": [-3.0, 3.0], "noise": 0.0} for r in stored)
    # The plugin's own fields are validated like bench's: one line, exit 2, before any work.
    suite.write_text(LINES_SUITE.replace("slope_range: [-3, 3]", "slope_range: [-3, 3], noise: -1"))
    bad = bench("run", str(suite), "--results-dir", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "field 'data.noise'" in bad.stderr and len(bad.stderr.splitlines()) == 1, bad.stderr
    assert not (tmp_path / "bad").exists()
    # Without the plugin on the path, the kind is unknown again, with the built-in kinds named.
    suite.write_text(LINES_SUITE)
    code, _, err = cli("validate", str(suite))
    assert code == 2 and "unknown data kind 'lines'" in err and "data kinds built in: sine, omniglot" in err, err
