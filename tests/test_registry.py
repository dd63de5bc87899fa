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
    assert ALGORITHMS.names("maml*") == ["maml", "maml.l2l"]


@pytest.mark.parametrize("module_info", list(pkgutil.iter_modules(bench.algorithms.__path__)), ids=lambda m: m.name)
def test_every_algorithm_file_registers_something_or_is_a_shared_base(module_info):
    module = importlib.import_module(f"bench.algorithms.{module_info.name}")
    registered = {ALGORITHMS.get(name) for name in ALGORITHMS.names()}
    defined_here = [obj for obj in vars(module).values()
                    if isinstance(obj, type) and issubclass(obj, Algorithm) and obj.__module__ == module.__name__]
    if module_info.name in {"base", "embedding", "gradient", "l2l_reference"}:
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


@pytest.mark.slow
def test_third_party_package_registers_through_the_entry_point_group(tmp_path, cli):
    source = tmp_path / "src"
    (source / "bench_zero_plugin").mkdir(parents=True)
    (source / "bench_zero_plugin" / "__init__.py").write_text(PLUGIN)
    (source / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "bench-zero-plugin"
        version = "0.0.1"
        [project.entry-points."bench.algorithms"]
        zero-plugin = "bench_zero_plugin"
    """))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(source)], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path])}
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
