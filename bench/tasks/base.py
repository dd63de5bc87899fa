"""Episodes as tensors, and the interface every task source implements."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class TaskBatch:
    """A batch of B tasks with the same shapes.

    support_x: (B, n_support, *input_shape); support_y: (B, n_support, *target_shape)
    query_x: (B, n_query, *input_shape); query_y: (B, n_query, *target_shape)
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    identity: bytes | None = None  # what determines the tensors, when cheaper to hash than they are

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return TaskBatch(*(t.to(device, non_blocking=True) for t in self.tensors()), identity=self.identity)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.support_x, self.support_y, self.query_x, self.query_y)

    def slice(self, start: int, stop: int) -> TaskBatch:
        return TaskBatch(*(t[start:stop] for t in self.tensors()))

    def update_hash(self, digest) -> None:
        """Feed what determines these episodes into ``digest`` (hashlib object)."""
        if self.identity is not None:
            digest.update(self.identity)
            return
        for tensor in self.tensors():
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())


class TaskSource(Protocol):
    """Draws episodes; ``split`` is ``train``, ``val`` or ``test``.

    ``eval_chunk``: how many evaluation episodes to materialise at once (None: all).
    """

    eval_chunk: int | None
    in_shape: tuple[int, ...]

    def batch(self, split: str, seed: int, indices: range) -> TaskBatch: ...


def episode_hash(batch: TaskBatch) -> str:
    """SHA-256 of the episodes: their tensors' exact bytes, or their ``identity`` when they have one."""
    digest = hashlib.sha256()
    batch.update_hash(digest)
    return digest.hexdigest()
