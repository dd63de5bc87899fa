"""Property-based tests (hypothesis) of hostile input to the command line.

Every malformed suite file, ``--set`` override, argument list and record file must end in exit
code 2 with ONE line on stderr starting with ``error:`` (never a traceback), and must leave every
stored file as it was. Input that happens to be valid may succeed (exit 0).

Nothing here trains or downloads: ``run`` is always a ``--dry-run``, ``check`` compares stored
records (``--records``), ``baseline`` builds from stored records (``--from-records``), ``cost`` and
``perf`` always get one invalid value, ``download`` is never generated, and the argument fuzzing
runs in an empty temporary working directory, so relative default paths (results/, report/) land
there. Examples are derandomized: the same on every machine and run, so a failure reproduces.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import records
from bench.algorithms import ALGORITHMS
from bench.cli import build_parser, main
from bench.config import SUITE_OVERRIDABLE, load_suite
from bench.run.runner import plan_run
from tests.conftest import ROOT, snapshot

SUITES = ROOT / "suites"
BASELINE = ROOT / "results" / "baselines" / "sine-smoke.json"
SINE_RECORDS = sorted((ROOT / "results" / "sine" / "smoke").glob("*.json"))[:3]
OK_CODES = {"run": (0,), "check": (0, 1), "leaderboard": (0,), "report": (0,), "validate": (0,), "list": (0,)}


def fuzz(examples: int) -> settings:
    """Fixed examples (derandomize) and no example database, so CI sees the same cases every time;
    BENCH_FUZZ_SCALE=20 tries 20 times as many (a longer hunt, by hand)."""
    return settings(max_examples=examples * int(os.environ.get("BENCH_FUZZ_SCALE", "1")), deadline=None,
                    derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def bench(capsys, *argv: str) -> tuple[int, str, str]:
    """``python -m bench -q ARGV`` in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main(["-q", *argv])
    except SystemExit as exc:  # argparse: --help (0) or a usage error
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_clean(result: tuple[int, str, str], ok: tuple[int, ...] = (0,), max_lines: int = 1) -> None:
    """Success, or exit 2 with one non-empty ``error:`` line on stderr; never a traceback."""
    code, out, err = result
    assert "Traceback" not in out and "Traceback" not in err, err
    if code in ok:
        return
    assert code == 2, f"exit {code}: {err}"
    lines = err.splitlines()
    assert 1 <= len(lines) <= max_lines, f"expected one line on stderr, got {len(lines)}: {err!r}"
    assert all(line.startswith("error: ") and line[len("error: "):].strip() for line in lines), err


def tree_digest(directory: Path) -> str:
    """One hash of every file's name and bytes under ``directory``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def repository_unchanged():
    """The committed results and report are byte for byte the same after the test."""
    before = {d: tree_digest(ROOT / d) for d in ("results", "report", "suites")}
    yield
    assert {d: tree_digest(ROOT / d) for d in before} == before


# --- building blocks -----------------------------------------------------------------------------

# Any text an argument or a file can hold: no NUL (argv cannot), no lone surrogates (only undecodable
# bytes make those, and the real stderr escapes them where the test's captured one would raise).
CHARACTERS = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
TEXT = st.text(CHARACTERS, max_size=12)
WORDS = ["", "smoke", "standard", "paper", "mlp", "sine", "text", "conv4", "../../x", "/", "1e400", ".nan", "-1",
         "yes", "null", "~", "[", "{", "*", "&a", "!!str", "\t", "é", "名前", "2024-02-30", "0x1F", "1_000"]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.integers(max_value=-1),
    st.sampled_from([0, -1, 2**31, 2**63, 10**30, 10**400]),
    st.floats(), st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324]),
    TEXT, st.sampled_from(WORDS),
)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT | st.integers(-3, 3), inner, max_size=3), max_leaves=6)


def paths(node: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every location in a parsed YAML or JSON document (the root is ``()``)."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths(value, (*prefix, index))


def at(node: Any, path: tuple) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated(draw, document: Any, steps: int = 3) -> Any:
    """``document`` with 1..steps keys deleted, values replaced by junk, or unknown keys added."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, steps))):
        inner = [p for p in paths(document) if p]
        if not inner:
            break
        how = draw(st.sampled_from(["delete", "replace", "replace", "add"]))
        if how == "add":
            mappings = [p for p in paths(document) if isinstance(at(document, p), dict)]
            target = at(document, draw(st.sampled_from(mappings)))
            target[draw(TEXT | st.integers(-3, 3))] = draw(JUNK)
            continue
        path = draw(st.sampled_from(inner))
        parent = at(document, path[:-1])
        if how == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JUNK)
    return document


# --- suite files ---------------------------------------------------------------------------------

BASES = ("sine", "omniglot-5w1s", "banking77-5w1s")
BASE_TEXT = {name: (SUITES / f"{name}.yaml").read_text() for name in BASES}
BASE_RAW = {name: yaml.safe_load(text) for name, text in BASE_TEXT.items()}


@st.composite
def suite_files(draw) -> tuple[str, bytes]:
    """(the suite it was made from, the bytes of a mutated suite file)."""
    base = draw(st.sampled_from(BASES))
    text = BASE_TEXT[base]
    how = draw(st.sampled_from(["fields", "fields", "fields", "fields", "truncate", "splice", "bytes", "not utf-8",
                                "empty", "not a mapping", "deep", "long number", "tiers", "include"]))
    if how == "fields":
        return base, yaml.safe_dump(draw(mutated(BASE_RAW[base])), sort_keys=False, allow_unicode=True).encode()
    if how == "truncate":
        return base, text[:draw(st.integers(0, len(text) - 1))].encode()
    if how == "splice":
        start = draw(st.integers(0, len(text)))
        end = draw(st.integers(start, min(len(text), start + 40)))
        insert = draw(st.text(CHARACTERS, max_size=20) | st.sampled_from(
            [":", ": :", "\t", "- ", "{", "[", "'", '"', "&a", "*a", "!!python/object:os.system", "? ", "%YAML 9"]))
        return base, (text[:start] + insert + text[end:]).encode()
    if how == "bytes":
        return base, draw(st.binary(max_size=200))
    if how == "not utf-8":
        data = text.encode()
        where = draw(st.integers(0, len(data)))
        return base, data[:where] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[where:]
    if how == "empty":
        return base, draw(st.sampled_from([b"", b"\n", b"# nothing\n", b"---\n", b"null\n"]))
    if how == "not a mapping":
        return base, yaml.safe_dump(draw(st.lists(JUNK, max_size=3) | SCALARS), allow_unicode=True).encode()
    if how == "deep":
        depth = draw(st.sampled_from([100, 500]))  # 500 is past the recursion limit
        return base, (text + f"\nalgorithms: {'[' * depth}{']' * depth}\n").encode()
    if how == "long number":
        field = draw(st.sampled_from(["shots", "version", "episode_seed", "queries"]))
        return base, (text + f"\n{field}: {'9' * draw(st.sampled_from([400, 5000]))}\n").encode()
    if how == "tiers":  # the tier fields and the default tier are read before validation
        raw = copy.deepcopy(BASE_RAW[base])
        raw[draw(st.sampled_from(["tiers", "default_tier"]))] = draw(JUNK)
        return base, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode()
    raw = copy.deepcopy(BASE_RAW[base])  # include: another file (missing, itself, a directory, junk)
    raw["include"] = draw(st.sampled_from(["fuzzed.yaml", "./fuzzed.yaml", "../fuzzed.yaml", "missing.yaml", ".", "/",
                                           str(SUITES / "sine.yaml")]) | JUNK)
    return base, yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode()


def cheap_to_plan(base: str, path: Path) -> bool:
    """A dry run builds the episode source: fine for sine, and for data the cache already holds."""
    suite, original = load_suite(str(path)), load_suite(base)
    return suite.data.kind == "sine" or (suite.data == original.data and suite.model == original.model)


def test_a_hostile_suite_file_is_one_line_and_exit_2(capsys, tmp_path, repository_unchanged):
    @fuzz(200)
    @given(case=suite_files())
    def check(case: tuple[str, bytes]) -> None:
        base, content = case
        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            path = Path(scratch) / "fuzzed.yaml"
            path.write_bytes(content)
            result = bench(capsys, "validate", str(path))
            assert_clean(result)
            if result[0] == 0 and not cheap_to_plan(base, path):
                return
            results = Path(scratch) / "results"
            assert_clean(bench(capsys, "run", str(path), "--dry-run", "--results-dir", str(results)))
            assert not [p for p in results.rglob("*") if p.is_file()], "a dry run wrote a file"
            if result[0] != 0:  # every command that reads a suite file says the same
                assert_clean(bench(capsys, "leaderboard", str(path), "--results-dir", str(results)))
                assert_clean(bench(capsys, "check", str(path), "--baseline", str(BASELINE), "--records", str(results)))

    check()


# --- --set overrides -----------------------------------------------------------------------------

HYPERPARAMETERS = sorted(f"{a}.{h}" for a in ALGORITHMS.names() for h in ALGORITHMS.get(a).Hparams.model_fields)
SUITE_FIELDS = sorted(f"suite.{f}" for f in SUITE_OVERRIDABLE)
VALUES = st.one_of(
    TEXT,
    st.sampled_from(["", " ", "0", "-1", "1e400", ".nan", ".inf", "-.inf", "nan", "inf", "-0.001", "-3", "1e-400",
                     "99999999999999999999", "[0, 0]", "[-1]", "[0, 99999999999999999999]", "9" * 5000, "[" * 1000, "[1, 2",
                     "{a: 1}", "[]", "{}", "null", "~", "true", "yes", "2024-02-30", "!!int x", "!!python/object:os.system",
                     "&a [*a]", "&a {b: *a}", "'unterminated", "a: b: c", "- 1", "0x1F", "1_000", "é", "名前",
                     "minilm", "wordcnn", "relu", "mlp", "[40, 40]", "[0.1, 5.0]"]),
    JUNK.map(lambda value: yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()),
)
KEYS = st.one_of(
    TEXT,
    st.tuples(st.sampled_from(sorted(ALGORITHMS.names())), TEXT).map(".".join),
    st.sampled_from(HYPERPARAMETERS),
    st.tuples(st.sampled_from(SUITE_FIELDS), st.sampled_from(["", ".kind", ".hidden", ".encoder", ".x", ".", ".0"])).map("".join),
    TEXT.map("suite.".__add__),
)
SETS = st.tuples(KEYS, st.sampled_from(["=", "=", "=", "", "==", " = "]), VALUES).map("".join)


def test_a_hostile_set_override_is_one_line_and_exit_2(capsys, tmp_path, repository_unchanged):
    results = tmp_path / "results"

    @fuzz(400)
    @given(overrides=st.lists(SETS, min_size=1, max_size=3))
    def check(overrides: list[str]) -> None:
        argv = ["run", "sine", "--tier", "smoke", "--dry-run", "--results-dir", str(results)]
        for text in overrides:
            argv += ["--set", text]
        result = bench(capsys, *argv)
        assert_clean(result)
        assert not [p for p in results.rglob("*") if p.is_file()], "a dry run wrote a file"
        if result[0] == 0:  # what a dry run accepts, the real run must be able to run and record
            plan = plan_run("sine", seeds=None, tier="smoke", results_dir=results, device="cpu",
                            overrides=overrides, dry_run=True)
            assert_storable(plan.suite.model_dump(mode="json"))
            for run in plan.runs:
                assert_storable(run.hparams.model_dump(mode="json"))

    check()


def assert_storable(value) -> None:
    """Finite numbers and 64-bit integers only: what a JSON record and torch can hold."""
    json.dumps(value, allow_nan=False)
    if isinstance(value, dict):
        for item in value.values():
            assert_storable(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            assert_storable(item)
    elif isinstance(value, int) and not isinstance(value, bool):
        assert -(2**63) <= value < 2**63, value


# --- command-line arguments ----------------------------------------------------------------------

def _options() -> dict[str, list[tuple[str, bool, list[str]]]]:
    """Each command's options: (flag, takes a value, its choices)."""
    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001 (the parser's own table)
    return {name: [(action.option_strings[-1], action.nargs != 0, [str(c) for c in action.choices or []])
                   for action in parser._actions if action.option_strings and action.dest != "help"]  # noqa: SLF001
            for name, parser in commands.items()}


OPTIONS = _options()
FUZZED_COMMANDS = ("run", "check", "leaderboard", "report", "baseline", "validate", "list", "cost", "perf")
SUITE_NAMES = ["sine", "omniglot-5w1s", "banking77-5w1s", "sinus", "", "/", "..", ".", "all", "sine.yaml",
               "missing.yaml", "file.txt", str(SUITES / "sine.yaml"), "sine/smoke", "-", "--", "-x"]
GENERIC = ["", "-1", "0", "1", "2", "0.5", "nan", "inf", "-inf", "1e400", "a,b", "0,0", ",", "1,,2", "cuda:99", "cuda",
           "cuda:x", "cpu", "tpu", "auto", "nope", "smoke", "standard", "paper", "sine", "sinus", "mamal", "maml",
           "maml,mamal", "maml,maml", "protonet", "json", "xml", "9" * 30, "-", "-x", "é", "suite.shots=0",
           "maml.inner_lr=x", "maml.inner_lr=0.01", "local", "bf16", "fp8"]
# Values each option takes when used right, so that most command lines get past argparse and the
# one wrong value is found by the command itself.
VALID = {
    "--tier": ["smoke", "standard", "paper"], "--algorithms": ["maml", "maml,cnp", "cnp", "protonet"],
    "--seeds": ["0", "0,1", "3"], "--device": ["cpu", "auto"], "--executor": ["local"], "--address": ["auto"],
    "--set": ["maml.inner_lr=0.02", "suite.test_tasks=10", "suite.model.hidden=[8]"],
    "--task-chunk": ["1", "4"], "--threads": ["1"], "--retries": ["0", "3"], "--checkpoint-every": ["0", "5"],
    "--cpus-per-job": ["1", "0.5"], "--gpus-per-job": ["0"], "--rounds": ["1"], "--alpha": ["0.05", "0.5"],
    "--min-effect": ["0", "0.1"], "--speed-tolerance": ["0.5"], "--memory-tolerance": ["0.5"],
    "--baseline": [str(BASELINE)],
}
# Paths are relative to the test's empty working directory (records/ holds three real sine records),
# except the read-only baseline and suite file: nothing a fuzzed command writes can reach the repository.
PATHS = ["records", "missing", "file.txt", "empty", "empty/", "missing/deep/x.json", "out.json", "", ".", "file.txt/x"]
PATH_OPTIONS = {"--results-dir", "--records", "--out", "--json", "--markdown", "--baseline", "--data-dir"}


@st.composite
def command_lines(draw) -> list[str]:
    """A command line with wrong arguments among right ones, made unable to train, time or download."""
    command = draw(st.sampled_from([*FUZZED_COMMANDS, "junk"]))
    options = OPTIONS.get(command, [o for opts in OPTIONS.values() for o in opts])
    tokens: list[str] = []
    if command in ("run", "check", "leaderboard", "baseline", "cost", "validate") and draw(st.integers(0, 4)):
        tokens.append(draw(st.sampled_from(["sine", "sine", "omniglot-5w1s", *SUITE_NAMES]) | TEXT))
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["option"] * 8 + ["typo", "positional", "junk"]))
        if kind == "positional":
            tokens.append(draw(st.sampled_from(SUITE_NAMES) | TEXT))
        elif kind == "junk":
            tokens.append(draw(TEXT | st.sampled_from(["--", "-", "-h", "--help", "-q", "-v", "--=", "--x=1"])))
        else:
            flag, takes_value, choices = draw(st.sampled_from(options)) if options else ("--x", True, [])
            if kind == "typo":  # a misspelt flag: a letter dropped, doubled or replaced
                i = draw(st.integers(2, max(2, len(flag) - 1)))
                flag = flag[:i] + draw(st.sampled_from(["", flag[i - 1], "x", "_", "-"])) + flag[i + 1:]
            tokens.append(flag)
            if takes_value and draw(st.integers(0, 9)):  # now and then the value is missing
                paths = [p for p in PATHS if not (p == "records" and flag in ("--out", "--json", "--markdown"))
                         and not (command == "report" and p in ("records", "", "."))]  # a full report: slow
                good = (VALID.get(flag, []) + paths) if flag in PATH_OPTIONS else (VALID.get(flag, []) + choices)
                bad = st.sampled_from(paths) if flag in PATH_OPTIONS else (
                    st.sampled_from(GENERIC) | TEXT.filter(lambda t: not t.startswith("/")))
                value = draw(st.sampled_from(good) if good and draw(st.integers(0, 2)) else bad)
                if draw(st.booleans()) and flag.startswith("--"):
                    tokens[-1] = f"{flag}={value}"
                else:
                    tokens.append(value)
    tokens = [t for t in tokens if t not in ("ray", "download")]  # no Ray cluster, no download
    top = draw(st.sampled_from([[]] * 6 + [["-v"], ["-h"]]))
    if command == "junk":
        name = draw(TEXT.filter(lambda t: t not in OPTIONS and t not in ("-h", "--help", "-v", "-q")))
        return [*top, name, *tokens]
    if command == "run":  # planned only, never run
        return [*top, "run", "--dry-run", *tokens]
    if command == "check":  # compares stored records: runs nothing, whatever else is given
        return [*top, "check", "--records", "empty", *tokens]
    if command == "baseline":  # from stored records only
        return [*top, "baseline", "--from-records", *tokens]
    if command == "cost":  # an unknown tier stops it before any timing (or, after a "--", unknown suites do)
        return [*top, "cost", *tokens, "--tier", "nope"]
    if command == "perf":  # zero rounds is refused before any timing
        return [*top, "perf", *tokens, "--rounds", "0"]
    if command == "validate" and len(tokens) == 0:
        tokens.append("sine")  # not all 21 suites every time: slow, and tested elsewhere
    return [*top, command, *tokens]


def test_hostile_arguments_are_one_line_and_exit_2(capsys, tmp_path, monkeypatch, repository_unchanged):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "file.txt").write_text("not a directory\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "records" / "sine" / "smoke").mkdir(parents=True)
    for path in SINE_RECORDS:
        shutil.copy(path, tmp_path / "records" / "sine" / "smoke" / path.name)
    stored = snapshot(tmp_path / "records")

    @fuzz(500)
    @given(argv=command_lines())
    def check(argv: list[str]) -> None:
        assert "download" not in argv[:3]
        command = next((a for a in argv if not a.startswith("-")), "")
        result = bench(capsys, *argv)
        # `validate A B` reports each bad suite on its own line; everything else says one thing.
        assert_clean(result, OK_CODES.get(command, (0,)), max_lines=len(argv) if command == "validate" else 1)
        assert (tmp_path / "file.txt").read_text() == "not a directory\n"
        assert snapshot(tmp_path / "records") == stored

    check()


@pytest.mark.parametrize("argv", [
    ["frobnicate"], [], ["run"], ["run", "sine", "--seeds", "a,b"], ["run", "sine", "--tier"], ["run", "sine", "--bogus"],
    ["check", "sine"], ["leaderboard", "sine", "--format", "xml"], ["run", "sine", "--task-chunk", "-1"],
    ["run", "sine", "--cpus-per-job", "0"], ["cost", "sine", "--encoder", "bert"], ["run", "sine", "--algorithms", ",,"],
    ["run", "sine", "--seeds", "0,0"], ["check", "sine", "--baseline", "b.json", "--min-effect", "nan"],
    ["run", "sine", "--oops\nnext line"],
])
def test_usage_errors_are_one_line_naming_the_help(capsys, argv):
    code, out, err = bench(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "--help)" in err, err


# --- record files --------------------------------------------------------------------------------

TEMPLATE = json.loads(SINE_RECORDS[0].read_text())
# Every field a reader uses, with what it must be.
READ_FIELDS: dict[tuple, str] = {
    ("run_id",): "str", ("status",): "status", ("started_at",): "str", ("ended_at",): "str", ("environment",): "dict",
    ("suite",): "dict", ("suite", "name"): "name", ("suite", "version"): "int", ("suite", "tier"): "name",
    ("suite", "file"): "str?", ("suite", "protocol"): "dict", ("suite", "protocol_hash"): "hex",
    ("suite", "protocol", "shots"): "int", ("suite", "protocol", "queries"): "int",
    ("suite", "protocol", "test_tasks"): "int", ("suite", "protocol", "test_inner_steps"): "int",
    ("suite", "protocol", "data"): "dict", ("suite", "protocol", "model"): "dict",
    ("suite", "protocol", "model", "hidden"): "list", ("suite", "protocol", "ways"): "int?",
    ("algorithm",): "dict", ("algorithm", "name"): "name", ("algorithm", "family"): "str",
    ("algorithm", "hyperparameters"): "dict",
    ("seeds",): "dict", ("seeds", "training_seed"): "int", ("seeds", "test_episodes"): "dict",
    ("seeds", "test_episodes", "sha256"): "str?",
    ("metric",): "dict", ("metric", "name"): "str", ("metric", "lower_is_better"): "bool", ("metric", "mean"): "float",
    ("metric", "ci95"): "float", ("metric", "n_episodes"): "int", ("metric", "inner_steps"): "int",
    ("metric", "per_task"): "per_task",
    ("timing",): "dict", ("timing", "wall_time_s"): "float", ("timing", "meta_train_tasks_per_s"): "float?",
    ("timing", "test_tasks_per_s"): "float?", ("timing", "data_share"): "float?",
    ("memory",): "dict", ("memory", "peak_mb"): "float",
    ("training",): "dict", ("training", "curve"): "curve", ("execution",): "dict?", ("execution", "task_chunk"): "int?",
}
OPTIONAL = {("suite", "file"), ("suite", "protocol", "data"), ("suite", "protocol", "model"),
            ("seeds", "test_episodes", "sha256"), ("suite", "protocol", "model", "hidden"), ("suite", "protocol", "ways"),
            ("metric", "per_task"),
            ("timing", "data_share"), ("training", "curve"), ("execution",), ("execution", "task_chunk")}
NOT_STR = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.lists(SCALARS, max_size=2),
                    st.dictionaries(TEXT, SCALARS, max_size=2))
NOT_NUMBER = st.one_of(st.none(), st.booleans(), TEXT, st.sampled_from(["1", "0.5", "NaN"]),
                       st.lists(st.integers(), max_size=2), st.dictionaries(TEXT, SCALARS, max_size=2),
                       st.sampled_from([math.nan, math.inf, -math.inf]))
WRONG: dict[str, st.SearchStrategy] = {
    "str": NOT_STR,
    "name": NOT_STR | st.sampled_from(["", "../x", "a/b", "/", ".", "..", " x", ".hidden", "x\ny"]),
    "hex": NOT_STR | st.sampled_from(["", "XYZ", "../a", "0123456789abcdeg", " ab"]),
    "status": NOT_STR | st.sampled_from(["", "done", "COMPLETED", "completed ", "ok"]),
    "int": NOT_NUMBER | st.sampled_from([1.5, 1.0, -0.0, 1e300]),
    "float": NOT_NUMBER,
    "bool": st.one_of(st.none(), st.integers(0, 1), TEXT, st.sampled_from(["true", "false"]),
                      st.lists(st.booleans(), max_size=1)),
    "dict": st.one_of(st.none(), st.booleans(), st.integers(), TEXT, st.lists(SCALARS, max_size=2)),
    "list": st.one_of(st.booleans(), st.integers(), TEXT, st.dictionaries(TEXT, SCALARS, max_size=2)),
    "per_task": st.one_of(st.booleans(), st.integers(), TEXT, st.dictionaries(TEXT, SCALARS, max_size=2),
                          st.just([]), st.lists(st.floats(0, 10), min_size=1, max_size=5),  # not one per episode
                          st.lists(NOT_NUMBER, min_size=50, max_size=50)),
    "curve": st.one_of(st.booleans(), st.integers(), TEXT, st.dictionaries(TEXT, SCALARS, max_size=2),
                       st.lists(NOT_STR.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=2),
                       st.sampled_from([[{}], [{"iteration": "x", "wall_time_s": 1.0}], [{"iteration": 1}],
                                        [{"iteration": 1, "wall_time_s": "x", "val_metric": 1.0}],
                                        [{"iteration": 1, "wall_time_s": 1.0, "val_metric": "x"}]])),
}
for kind in ("str", "int", "float", "dict"):
    WRONG[f"{kind}?"] = WRONG[kind].filter(lambda v: v is not None)


def _dump(record: Any) -> bytes:
    return json.dumps(record, indent=1, allow_nan=True).encode()


@st.composite
def hostile_records(draw) -> bytes:
    """The bytes of a file no bench run could have written."""
    text = SINE_RECORDS[draw(st.integers(0, len(SINE_RECORDS) - 1))].read_text()
    record = json.loads(text)
    how = draw(st.sampled_from(["wrong type", "wrong type", "wrong type", "wrong type", "missing", "bytes", "truncate",
                                "not utf-8", "not an object", "schema", "status", "nan", "deep", "long number"]))
    if how == "wrong type":
        path = draw(st.sampled_from(sorted(READ_FIELDS, key=str)))
        if path[0] == "execution" and not isinstance(record.get("execution"), dict):
            record["execution"] = {}
        at(record, path[:-1])[path[-1]] = draw(WRONG[READ_FIELDS[path]])
        return _dump(record)
    if how == "missing":
        path = draw(st.sampled_from(sorted((p for p in READ_FIELDS if p not in OPTIONAL and p[0] != "execution"), key=str)))
        del at(record, path[:-1])[path[-1]]
        return _dump(record)
    if how == "bytes":
        return draw(st.binary(max_size=300))
    if how == "truncate":
        return text[:draw(st.integers(0, len(text.rstrip()) - 1))].encode()
    if how == "not utf-8":
        where = draw(st.integers(0, len(text)))
        return text[:where].encode() + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"])) + text[where:].encode()
    if how == "not an object":
        return _dump(draw(st.lists(JUNK, max_size=3) | SCALARS.filter(lambda v: not isinstance(v, dict))))
    if how == "schema":
        record["schema_version"] = draw(st.sampled_from([0, 2, "1", True, 1.0, None, [1], {"v": 1}, -1, 10**400]))
        return _dump(record)
    if how == "status":
        record["status"] = draw(WRONG["status"])
        return _dump(record)
    if how == "nan":  # NaN and Infinity are not JSON; json.loads reads them anyway
        numbers = [p for p in paths(record) if isinstance(at(record, p), float)]
        path = draw(st.sampled_from(numbers))
        at(record, path[:-1])[path[-1]] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        return _dump(record)
    if how == "deep":
        depth = draw(st.sampled_from([2_000, 100_000]))
        field = draw(st.sampled_from(["environment", "training", "timing", "memory"]))  # keys used once in a record
        return text.replace(f'"{field}": ', f'"{field}": {"[" * depth}{"]" * depth}, "x{field}": ', 1).encode()
    path = draw(st.sampled_from([("seeds", "training_seed"), ("metric", "n_episodes"), ("suite", "version"),
                                 ("metric", "mean")]))
    record_text = _dump(record).decode()
    key = path[-1]
    value = at(record, path)
    # 5000 digits are more than Python reads; 400 are a valid integer, wrong as a mean or an episode count
    digits = "9" * (draw(st.sampled_from([400, 5000])) if key in ("mean", "n_episodes") else 5000)
    return record_text.replace(f'"{key}": {json.dumps(value)}', f'"{key}": {digits}', 1).encode()


@st.composite
def odd_records(draw) -> bytes:
    """A well-formed record with surprising values (another seed, tier or algorithm, odd numbers)."""
    record = json.loads(SINE_RECORDS[draw(st.integers(0, len(SINE_RECORDS) - 1))].read_text())
    for _ in range(draw(st.integers(1, 3))):
        field = draw(st.sampled_from(["seed", "tier", "algorithm", "numbers", "per_task", "curve", "status", "extra",
                                      "protocol", "environment", "execution", "started_at"]))
        if field == "seed":
            record["seeds"]["training_seed"] = draw(st.integers(-5, 5) | st.just(10**30))
        elif field == "tier":
            record["suite"]["tier"] = draw(st.sampled_from(["standard", "paper", "custom"]))
        elif field == "algorithm":
            record["algorithm"]["name"] = draw(st.sampled_from(["maml", "cnp", "protonet", "brand-new", "x.y"]))
        elif field == "numbers":
            path = draw(st.sampled_from([("metric", "mean"), ("metric", "ci95"), ("timing", "wall_time_s"),
                                         ("timing", "meta_train_tasks_per_s"), ("timing", "test_tasks_per_s"),
                                         ("memory", "peak_mb"), ("timing", "data_share")]))
            value = draw(st.sampled_from([0.0, -1.0, 1e308, -1e308, 5e-324, 0]) | st.floats(-1e6, 1e6))
            if path[0] == "timing" and path[1] != "wall_time_s" and draw(st.booleans()):
                value = None
            at(record, path[:-1])[path[-1]] = value
        elif field == "per_task":
            size = draw(st.integers(1, 60))
            record["metric"]["per_task"] = draw(st.lists(st.floats(-1e6, 1e6), min_size=size, max_size=size))
            record["metric"]["n_episodes"] = size
        elif field == "curve":
            record["training"]["curve"] = draw(st.sampled_from([None, [], [{"iteration": 1, "wall_time_s": 0.0}],
                                                                [{"iteration": 5, "wall_time_s": 1.0, "val_metric": None}]]))
        elif field == "status":
            record["status"] = draw(st.sampled_from(["running", "failed", "interrupted", "diverged"]))
        elif field == "extra":
            at(record, draw(st.sampled_from([(), ("suite",), ("metric",), ("timing",)])))[draw(TEXT)] = draw(JUNK)
        elif field == "protocol":
            record["suite"]["protocol_hash"] = draw(st.sampled_from(["0" * 16, "abc", record["suite"]["protocol_hash"]]))
            record["suite"]["protocol"]["test_tasks"] = draw(st.integers(-3, 10**6))
        elif field == "environment":
            record["environment"] = draw(st.sampled_from([{}, {"device": 5, "cpu_count": "x", "torch": None}]))
        elif field == "execution":
            record["execution"] = draw(st.sampled_from([None, {}, {"task_chunk": None}, {"task_chunk": 3}]))
        else:
            record["started_at"] = draw(TEXT)
    return json.dumps(_finite(record), indent=1, allow_nan=False).encode()


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (which bench never writes) replaced by 0."""
    if isinstance(value, float) and not math.isfinite(value):
        return 0.0
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


FILE_NAMES = ["maml-seed0-29991231T000000Z-deadbeef.json", "zz.json", "sub/deeper/maml-seed1-x.json", "a b.json"]


def _results_with(scratch: Path, name: str, content: bytes) -> tuple[Path, Path]:
    results = scratch / "results"
    smoke = results / "sine" / "smoke"
    smoke.mkdir(parents=True)
    for path in SINE_RECORDS:
        shutil.copy(path, smoke / path.name)
    bad = smoke / name
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_bytes(content)
    return results, bad


def _readers(results: Path, out: Path) -> dict[str, list[str]]:
    return {
        "leaderboard": ["leaderboard", "sine", "--results-dir", str(results)],
        "run": ["run", "sine", "--tier", "smoke", "--dry-run", "--results-dir", str(results)],
        "check": ["check", "sine", "--baseline", str(BASELINE), "--records", str(results)],
        "report": ["report", "sine", "--results-dir", str(results), "--out", str(out)],
    }


def test_a_hostile_record_stops_every_reader_with_one_line_and_changes_nothing(capsys, tmp_path, repository_unchanged):
    @fuzz(100)
    @given(content=hostile_records(), name=st.sampled_from(FILE_NAMES))
    def check(content: bytes, name: str) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            results, bad = _results_with(Path(scratch), name, content)
            before = snapshot(results)
            out = Path(scratch) / "report"
            for command, argv in _readers(results, out).items():
                code, stdout, err = bench(capsys, *argv)
                assert_clean((code, stdout, err), ok=())
                assert str(bad) in err and "delete it" in err, f"{command}: {err}"
                assert snapshot(results) == before, f"{command} changed a stored file"
            assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()], "report wrote files"

    check()


def test_an_odd_but_well_formed_record_never_crashes_a_reader(capsys, tmp_path, repository_unchanged):
    @fuzz(100)
    @given(content=odd_records(), name=st.sampled_from(FILE_NAMES))
    def check(content: bytes, name: str) -> None:
        with tempfile.TemporaryDirectory(dir=tmp_path) as scratch:
            results, _ = _results_with(Path(scratch), name, content)
            before = snapshot(results)
            readers = _readers(results, Path(scratch) / "report")
            del readers["report"]  # figures take a second per build: covered by a few fixed cases below
            for command, argv in readers.items():
                assert_clean(bench(capsys, *argv), OK_CODES[command])
                assert snapshot(results) == before, f"{command} changed a stored file"

    check()


def _record(**changes: Any) -> bytes:
    record = copy.deepcopy(TEMPLATE)
    for dotted, value in changes.items():
        path = tuple(dotted.split("__"))
        at(record, path[:-1])[path[-1]] = value
    return _dump(record)


@pytest.mark.parametrize(("content", "why"), [
    (_record(seeds=5), "field 'seeds'"),
    (_record(metric__per_task="x"), "field 'metric.per_task'"),
    (_record(suite=[]), "field 'suite'"),
    (_record(schema_version=2), "schema_version 2"),
    (_record(schema_version=True), "schema_version True"),
    (_record(metric__mean=math.nan), "NaN is not a JSON number"),
    (_record(metric__per_task=[1.0, 2.0]), "per_task has 2 values for n_episodes 50"),
    (_record(suite__name="../../etc"), "field 'suite.name'"),
    (_record(suite__tier=["smoke"]), "field 'suite.tier'"),
    (_record(timing__wall_time_s="1 s"), "field 'timing.wall_time_s'"),
    (_record(training__curve=[{"iteration": "x", "wall_time_s": 1.0}]), "field 'training.curve.0.iteration'"),
    (_record(execution={"task_chunk": [1]}), "field 'execution.task_chunk'"),
    (b'{"schema_version": 1, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"schema_version": 1, "x": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
])
def test_a_damaged_record_is_named_with_what_is_wrong(capsys, tmp_path, content, why):
    results, bad = _results_with(tmp_path, "zz.json", content)
    before = snapshot(results)
    for argv in _readers(results, tmp_path / "report").values():
        code, out, err = bench(capsys, *argv)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {bad}: not a readable bench record (") and why in err, err
        assert "move it out of the results directory or delete it" in err
    assert snapshot(results) == before


def test_a_report_over_odd_records_is_written(capsys, tmp_path):
    """Well-formed records with unusual values (no timing, a new seed with its own episode count) still make a report."""
    results, _ = _results_with(tmp_path, "anil-seed7-x.json", _record(seeds__training_seed=7, timing__meta_train_tasks_per_s=None,
                                                                      timing__data_share=None, training__curve=[]))
    [cnp] = [json.loads(p.read_text()) for p in SINE_RECORDS if p.name.startswith("cnp-")]
    (results / "sine" / "smoke" / "cnp-seed3-x.json").write_bytes(  # of cnp's configuration: one entry with it
        _record(seeds__training_seed=3, algorithm=cnp["algorithm"], metric__per_task=[1.0, 2.0], metric__n_episodes=2))
    code, out, err = bench(capsys, "report", "sine", "--results-dir", str(results), "--out", str(tmp_path / "report"))
    assert code == 0, err
    code, out, err = bench(capsys, "check", "sine", "--baseline", str(BASELINE), "--records", str(results))
    assert code == 2 and "cannot be paired: they do not all hold per-episode values" in err and len(err.splitlines()) == 1


# --- the fixes, one by one -----------------------------------------------------------------------

def _sine_with(*lines: str) -> bytes:
    """The sine suite's text with these top-level ``key: value`` lines in place of its own."""
    keys = {line.split(":")[0] for line in lines}
    kept, skipping = [], False
    for line in BASE_TEXT["sine"].splitlines():
        if line.split(":")[0] in keys and not line.startswith((" ", "\t")):
            skipping = True
            continue
        if skipping and line.startswith((" ", "\t")):
            continue
        skipping = False
        kept.append(line)
    return "\n".join([*kept, *lines, ""]).encode()


@pytest.mark.parametrize(("content", "message"), [
    (b"name: \xff\xfe\n", "not a text file in UTF-8"),
    (_sine_with("default_tier: [smoke]"), "field 'default_tier' must be one of smoke, ci, standard, paper"),
    (_sine_with("tiers: {1: {}, smoke: {}}", "default_tier: paper"), "suite has no tier 'paper'"),
    (_sine_with("shots: " + "9" * 5000), "a number of more than 4300 digits"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),  # past any stack depth the test runs at
    (_sine_with("version: 2024-02-30"), "day is out of range for month"),
    (_sine_with("name: ../../elsewhere"), "field 'name': a suite name is letters"),
    (_sine_with("data: {kind: sine, amplitude_range: [0, .inf]}"), "Input should be a finite number"),
    (_sine_with("algorithms: {maml: {inner_lr: .nan}}"), "maml.inner_lr must be a finite number"),
    (BASE_TEXT["sine"].encode() + b"\nshots: 5\n", "key 'shots' given twice in one mapping (keep one)"),
    (_sine_with("test_tasks: 99999999999999999999"), "field 'test_tasks': Input should be less than or equal to 1000000"),
    (_sine_with("seeds: [0, 0]"), "field 'seeds': give each training seed once"),
    (_sine_with("algorithms: {maml: {inner_steps: -3}}"),
     "algorithms: maml.inner_steps: Input should be greater than or equal to 0"),
    (_sine_with("algorithms: {mamll: {inner_lr: 0.1}}"), "algorithms: unknown algorithm 'mamll'; did you mean 'maml'"),
    (b"include: ../suites/fuzzed.yaml\nname: x\n", "include cycle"),
])
def test_a_bad_suite_file_is_one_clear_line(capsys, tmp_path, content, message):
    path = tmp_path / "suites" / "fuzzed.yaml"
    path.parent.mkdir()
    path.write_bytes(content)
    for argv in (["validate", str(path)], ["run", str(path), "--dry-run", "--results-dir", str(tmp_path / "r")]):
        code, out, err = bench(capsys, *argv)
        assert code == 2 and len(err.splitlines()) == 1 and message in err, err
        assert err.startswith("error: ") and "fuzzed.yaml" in err, err


@pytest.mark.parametrize(("override", "message"), [
    ("maml.inner_lr=" + "9" * 5000, "cannot read value"),
    ("maml.inner_lr=" + "[" * 1000, "cannot read value"),
    ("maml.inner_steps=2024-02-30", "cannot read value"),
    ("maml.inner_lr=.nan", "must be a finite number"),
    ("maml.inner_lr=[1, .inf]", "must be a finite number"),
    ("suite.data.amplitude_range=[0, .inf]", "Input should be a finite number"),
])
def test_a_bad_set_value_is_one_clear_line(capsys, tmp_path, override, message):
    code, out, err = bench(capsys, "run", "sine", "--tier", "smoke", "--dry-run", "--results-dir", str(tmp_path),
                           "--set", override)
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize("name", ["/", "..", ".", "sine/smoke", "../results"])
def test_a_suite_name_is_never_a_path_into_other_directories(capsys, tmp_path, name):
    code, out, err = bench(capsys, "leaderboard", name, "--results-dir", str(tmp_path))
    assert code == 2 and re.match(rf"error: {re.escape(repr(name))} is not a suite name", err), err


def test_a_report_into_a_file_is_refused_before_writing(capsys, tmp_path):
    results, _ = _results_with(tmp_path, "maml-seed0-x.json", SINE_RECORDS[0].read_bytes())
    blocker = tmp_path / "report.txt"
    blocker.write_text("mine")
    code, out, err = bench(capsys, "report", "sine", "--results-dir", str(results), "--out", str(blocker))
    assert code == 2 and "report directory" in err and "choose another with --out" in err, err
    assert blocker.read_text() == "mine"


@pytest.mark.parametrize("argv", [
    ["run", "sine", "--tier", "smoke", "--dry-run", "--results-dir", "RESULTS"],  # the damaged record
    ["run", "sine", "--tier", "smoke", "--dry-run", "--set", "maml.inner_lr=" + "9" * 5000],
    ["run", "sine", "--tier"],
])
def test_the_real_process_prints_one_line_too(tmp_path, argv):
    """Not in-process: logging at its default level and Python's own stderr, as a user sees them."""
    results, bad = _results_with(tmp_path, "zz.json", b'{"schema_version": 1, "status": "comp')
    argv = [str(results) if a == "RESULTS" else a for a in argv]
    done = subprocess.run([sys.executable, "-m", "bench", *argv], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr


def test_records_as_written_by_bench_all_load():
    """The committed records pass the checks (they are what the checks describe)."""
    loaded = [records.load_record(p) for p in sorted((ROOT / "results").glob("*/*/*.json"))
              if p.parts[-3] not in (*records.MEASUREMENT_DIRS, "baselines")]
    assert len(loaded) > 100
