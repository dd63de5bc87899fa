"""Install learn2learn 0.2.0 into the running interpreter, working around its broken sdist.

learn2learn 0.2.0 ships no wheels and its pre-generated C sources do not compile on Python 3.11
(``longintrepr.h``). Regenerating them with Cython, outside pip's build isolation, works. tox and
.ci/run call this script, so nobody has to remember the sequence. It does nothing when
learn2learn already imports.

Usage: python tools/install_learn2learn.py
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

VERSION = "0.2.0"
BUILD_REQUIREMENTS = ["cython", "numpy", "setuptools", "wheel"]
# learn2learn imports these at import time; gsutil is declared but never imported, and qpth is
# loaded lazily (only by its SVM head).
RUNTIME_REQUIREMENTS = ["requests", "tqdm", "scipy", "gym==0.26.2", "torchvision"]


def pip(*args: str) -> None:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args])


def installed_version() -> str | None:
    if importlib.util.find_spec("learn2learn") is None:
        return None
    from importlib.metadata import version

    return version("learn2learn")


def main() -> int:
    if installed_version() == VERSION:
        print(f"learn2learn {VERSION} already installed")
        return 0
    pip(*BUILD_REQUIREMENTS)
    pip(*RUNTIME_REQUIREMENTS)
    # --no-cache-dir: a cached wheel from a failed build would be reused and nothing rebuilt.
    pip(
        "--no-cache-dir", "--no-deps", "--use-pep517", "--no-build-isolation",
        "--config-settings=--build-option=build_ext", f"learn2learn=={VERSION}",
    )
    print(f"learn2learn {installed_version()} installed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
