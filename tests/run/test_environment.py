"""Where a record's environment comes from: the checkout's git state and the project's files, found
from the package's own location, whatever the working directory."""

from __future__ import annotations

import subprocess
import sys

from bench.config import SUITES_DIR
from bench.run.environment import PROJECT_ROOT, git_state
from tests.conftest import ROOT


def test_the_project_root_is_the_checkout_and_the_suites_its_own():
    assert PROJECT_ROOT == ROOT
    assert SUITES_DIR == ROOT / "suites" and (SUITES_DIR / "sine.yaml").is_file()


def test_git_state_and_suite_files_do_not_depend_on_the_working_directory(tmp_path):
    script = ("from bench.run.environment import git_state; from bench.results.reproduce import _suite_source; "
              "print(git_state()['commit']); print(_suite_source({'suite': {'file': 'suites/sine-k5.yaml', 'name': 'x'}}))")
    commit, suite = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                                   check=True).stdout.split()
    assert commit == git_state()["commit"]
    assert suite == str(ROOT / "suites" / "sine-k5.yaml")
