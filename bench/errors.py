"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class BenchError(Exception):
    """Bad input (a name, a file, a value) found before any work started."""


# What str.splitlines breaks at: shown escaped, so a message naming hostile input stays one line.
_LINE_BREAKS = str.maketrans({c: repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})


def one_line(text: str) -> str:
    """``text`` with its line breaks escaped (``\\n``): an error message is always one line."""
    return text.translate(_LINE_BREAKS)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A hint naming the closest known names, or listing all of them when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return "known: " + ", ".join(choices) if choices else "none are known"
