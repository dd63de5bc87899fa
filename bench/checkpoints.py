"""Training checkpoints, so that an interrupted run continues where it stopped (``--resume``, Ray retries).

A checkpoint belongs to one record (its ``run_id``) and lives beside the records, at
``<results_dir>/.checkpoints/<suite>/<tier>/<run_id>.pt``. It holds everything meta-training has
changed: the algorithm's parameters, buffers, optimizer and generator state, the best validation
state so far, the validation curve, the running loss and the timed segments. Training continued
from it takes exactly the steps an uninterrupted run takes, so the result is the same to the bit
(a test). It is written atomically, so a kill leaves the previous checkpoint or the new one, and
deleted once the run's final record is written.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from bench.records import write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
CHECKPOINTS = ".checkpoints"  # a dot directory: record readers skip it


def checkpoint_path(results_dir: Path, suite: str, tier: str, run_id: str) -> Path:
    return results_dir / CHECKPOINTS / suite / tier / f"{run_id}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none or it cannot be read (the run then starts over)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file: starting over is always correct, only slower
        log.warning("checkpoint %s cannot be read (%s: %s); the run starts from the beginning", path,
                    type(exc).__name__, exc)
        return None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        log.warning("checkpoint %s has another format; the run starts from the beginning", path)
        return None
    return state


def remove_checkpoint(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not remove checkpoint %s: %s", path, exc)
