"""How numbers and paths are shown in the tables and messages that commands print."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def significant(value: Any, digits: int = 3, whole_from: float | None = None) -> str:
    """``value`` to ``digits`` significant digits; empty for a missing value (None or NaN); from
    ``whole_from`` on, a whole number with thousands separators (1,234 rather than 1.23e+03)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if whole_from is not None and abs(float(value)) >= whole_from:
        return f"{float(value):,.0f}"
    return f"{float(value) if whole_from is not None else value:.{digits}g}"


def relative_path(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` when it lies under it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
