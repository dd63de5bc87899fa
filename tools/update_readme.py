"""Regenerate the README's results tables from the records under results/.

Each table sits between ``<!-- leaderboard:SUITE:TIER -->`` and ``<!-- /leaderboard -->``;
``tests/test_readme.py`` fails when a table and its records disagree.

Usage: python tools/update_readme.py [--check]
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.leaderboard import leaderboards, render  # noqa: E402

BLOCK = re.compile(r"(<!-- leaderboard:(?P<suite>[\w.-]+):(?P<tier>\w+) -->\n)(?P<body>.*?)(<!-- /leaderboard -->)", re.S)


def regenerate(text: str, results_dir: Path = ROOT / "results") -> str:
    def table(match: re.Match) -> str:
        body = render(leaderboards(results_dir, match["suite"], match["tier"]), "markdown")
        return f"{match.group(1)}{body}\n{match.group(5)}"

    return BLOCK.sub(table, text)


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text()
    new = regenerate(text)
    if "--check" in sys.argv:
        if new != text:
            print("README.md tables differ from results/; run python tools/update_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
