"""``run --save-model``: the selected model's weights, kept content-addressed beside the records.

A model is ``RESULTS/models/<sha256>.pt`` (the SHA-256 of the file's bytes, a ``torch.save`` of the
selected state dict); the record names it under ``saved_model`` with that hash, its size and what
the network was built for (input shape, outputs, training classes), so a later evaluation can
rebuild the network and check that the file is the one the record names. Equal weights give the
same bytes, so reruns share one file; nothing already stored is overwritten.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from bench.errors import BenchError
from bench.records import write_atomic

MODELS = "models"


def save_model(state: dict[str, torch.Tensor], results_dir: Path, problem: Any) -> dict[str, Any]:
    """Write ``state`` (atomically, once per content) and return the record's ``saved_model``."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buffer)
    data = buffer.getvalue()
    sha256 = hashlib.sha256(data).hexdigest()
    relative = Path(MODELS) / f"{sha256}.pt"
    path = results_dir / relative
    if not path.is_file():
        write_atomic(path, data)
    return {"path": str(relative), "sha256": sha256, "bytes": len(data), "in_shape": list(problem.in_shape),
            "out_features": problem.out_features, "n_train_classes": problem.n_train_classes}


def load_saved_model(record: dict[str, Any], results_dir: Path) -> dict[str, torch.Tensor]:
    """The state dict a record's ``saved_model`` names, after checking the file's SHA-256."""
    saved = record.get("saved_model")
    if not saved:
        raise BenchError(f"{record.get('_path', 'the record')} has no saved model; run it again with --save-model")
    path = results_dir / saved["path"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BenchError(f"saved model {path}: cannot read it ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != saved["sha256"]:
        raise BenchError(f"saved model {path}: its SHA-256 is not the one its record names; the file was changed")
    state: dict[str, torch.Tensor] = torch.load(io.BytesIO(data), weights_only=True)
    return state
