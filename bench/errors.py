"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
import errno
from collections.abc import Iterable


class BenchError(Exception):
    """Bad input (a name, a file, a value) found before any work started."""


class DataNotFound(BenchError):
    """The data files a suite reads are not there (``validate`` then reports the suite as unchecked,
    where a file that is there but damaged is an error)."""


class RecordNotWritten(Exception):
    """A finished run's record could not be written where it belongs (a full disk, say); the
    message says where the result was kept instead."""


# What str.splitlines breaks at: shown escaped, so a message naming hostile input stays one line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``\\n``): an error message is always one line."""
    return text.translate(_LINE_BREAKS)


# What to do about the file-system errors a run can meet, by errno.
_OS_ERROR_HINTS = {
    errno.ENOSPC: "the disk is full: free some space or choose another --results-dir / BENCH_CACHE_DIR",
    errno.EDQUOT: "the disk quota is exhausted: free some space or choose another --results-dir",
    errno.EROFS: "the file system is read-only: choose another --results-dir / BENCH_CACHE_DIR",
    errno.EACCES: "permission denied: fix the permissions or choose another --results-dir / BENCH_CACHE_DIR",
    errno.EPERM: "not permitted: fix the permissions or choose another --results-dir / BENCH_CACHE_DIR",
    errno.ENAMETOOLONG: "a file name is too long: use a shorter suite name or directory",
    errno.ENOTDIR: "a file stands where a directory is needed: move it away or choose another directory",
    errno.EEXIST: "a file stands where a directory is needed: move it away or choose another directory",
    errno.EISDIR: "a directory stands where a file is needed: move it away",
}


def describe_os_error(exc: OSError) -> str:
    """One line: which file, what the system said, and what to do."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
    hint = _OS_ERROR_HINTS.get(exc.errno or -1, "check the path and try again")
    return f"{where + ': ' if where else ''}{exc.strerror or exc}; {hint}"


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest known names, or listing all of them when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "known: " + ", ".join(choices) if choices else "none are known"
