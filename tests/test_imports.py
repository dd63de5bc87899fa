"""The package's import graph: no cycles, imports flow down the layers that ``bench/__init__.py``
describes, and every module imports on its own."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "bench"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the bench modules it imports (at module level or inside functions alike), and the
    packages around them."""
    known, graph = modules(), defaultdict(set)
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "bench":
                for alias in node.names:  # `from bench import records` names a module; `from bench.x import f` does not
                    graph[name].add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(a.name for a in node.names if a.name.split(".")[0] == "bench")
    # Importing bench.a.b runs bench.a's __init__ first: an edge to every enclosing package (but
    # not to the module's own packages, which are being imported already when it runs).
    for name, targets in graph.items():
        own = {".".join(name.split(".")[:n]) for n in range(1, name.count(".") + 1)}
        enclosing = {".".join(t.split(".")[:n]) for t in targets for n in range(2, t.count(".") + 1)}
        targets |= (enclosing & set(known)) - own
        targets.discard(name)
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path that returns to its start), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}}) is None


def test_imports_flow_one_way():
    graph = import_graph()
    assert len(graph) > 40  # the walk saw the package
    assert cycle(graph) is None, " -> ".join(cycle(graph) or [])


# bench/__init__.py's list: a module may import from its own layer and the layers before it.
LAYERS = (
    {"bench", "bench.errors", "bench.formatting", "bench.config", "bench.registry", "bench.seeding", "bench.stats",
     "bench.records", "bench.identity"},
    {"bench.datasets", "bench.models"},
    {"bench.tasks"},
    {"bench.algorithms"},
    {"bench.run"},
    {"bench.results"},
    {"bench.measure"},
    {"bench.api"},
    {"bench.cli", "bench.__main__"},
)


def layer(module: str) -> int:
    """The layer of ``module``: that of the longest listed name it is or lies under."""
    for length in range(module.count(".") + 1, 0, -1):
        prefix = ".".join(module.split(".")[:length])
        for number, names in enumerate(LAYERS):
            if prefix in names:
                return number
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and to bench/__init__.py's list")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{name} (layer {layer(name) + 1}) imports {target} (layer {layer(target) + 1})"
            for name, targets in sorted(graph.items()) for target in sorted(targets) if layer(target) > layer(name)]


def test_imports_flow_down_the_layers():
    upward = upward_imports(import_graph())
    assert not upward, "\n".join(upward)


def test_every_module_is_in_a_layer():
    for name in modules():
        layer(name)


def test_the_layer_check_sees_an_upward_import():
    assert upward_imports({"bench.tasks.base": {"bench.results.entries", "bench.records"}}) == [
        "bench.tasks.base (layer 3) imports bench.results.entries (layer 6)"]
    assert layer("bench.run.runner") > layer("bench.algorithms.maml") > layer("bench.tasks.sine") > layer("bench.records")
    assert layer("bench.results.report") < layer("bench.measure.perf") < layer("bench.cli.run")


def test_every_module_imports_on_its_own():
    """Imported one at a time, with no other bench module loaded before it (a fresh interpreter's
    bench state), so none relies on another having been imported first."""
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(set(modules()) - {'bench.__main__'})!r}:\n"  # __main__ runs the CLI
        "    for loaded in [m for m in sys.modules if m == 'bench' or m.startswith('bench.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
