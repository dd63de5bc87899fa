"""Training checkpoints, so that an interrupted run continues where it stopped (``--resume``, Ray retries).

A checkpoint belongs to one record (its ``run_id``) and lives beside the records, at
``<results_dir>/.checkpoints/<suite>/<tier>/<run_id>.pt``. It holds everything meta-training has
changed: the algorithm's parameters, buffers, optimizer and generator state, the best validation
state so far, the validation curve, the running loss and the timed segments. Training continued
from it takes exactly the steps an uninterrupted run takes, so the result is the same to the bit
(a test). It is written atomically, so a kill leaves the previous checkpoint or the new one, and
deleted once the run's final record is written. The file ends with the SHA-256 of what precedes
it, checked on load: a damaged checkpoint (a flipped bit in a weight) is refused, with a warning,
and the run starts over instead of continuing from wrong numbers.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from bench.records import write_atomic

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 2  # 2: a SHA-256 trailer
TRAILER = b"\nbench-checkpoint-sha256:"
TRAILER_SIZE = len(TRAILER) + 64
CHECKPOINTS = ".checkpoints"  # a dot directory: record readers skip it


def checkpoint_path(results_dir: Path, suite: str, tier: str, run_id: str) -> Path:
    return results_dir / CHECKPOINTS / suite / tier / f"{run_id}.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> bool:
    """Write the checkpoint; False (with a warning) when the file system refuses it, since a
    checkpoint only saves time: the run goes on, and an interruption restarts it from an older one."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buffer)
    payload = buffer.getvalue()
    try:
        write_atomic(path, payload + TRAILER + hashlib.sha256(payload).hexdigest().encode())
    except OSError as exc:
        log.warning("checkpoint %s not written (%s); training goes on without it", path, exc.strerror or exc)
        return False
    return True


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or None when there is none, it is damaged or it cannot be read
    (the run then starts over)."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
        payload, trailer = data[:-TRAILER_SIZE], data[-TRAILER_SIZE:]
        if not trailer.startswith(TRAILER):
            log.warning("checkpoint %s has no content hash (damaged, or of an older format); the run starts from "
                        "the beginning", path)
            return None
        if hashlib.sha256(payload).hexdigest().encode() != trailer[len(TRAILER):]:
            log.warning("checkpoint %s is damaged (its content does not match its SHA-256); the run starts from "
                        "the beginning", path)
            return None
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
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
