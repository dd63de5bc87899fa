"""Episodes as tensors, and the interface every task source implements."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bench.datasets.shapes import class_group
from bench.seeding import derive_seed


@dataclass(frozen=True)
class TaskBatch:
    """A batch of B tasks with the same shapes.

    support_x: (B, n_support, *input_shape); support_y: (B, n_support, *target_shape)
    query_x: (B, n_query, *input_shape); query_y: (B, n_query, *target_shape)
    support_classes, query_classes: (B, n_support), (B, n_query) long, or None: for classification,
    each example's class as its index in the split's class list (the same class in every episode
    has the same index), for methods that pre-train over all training classes.
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    identity: bytes | None = None  # what determines the tensors, when cheaper to hash than they are
    support_classes: torch.Tensor | None = None
    query_classes: torch.Tensor | None = None
    # Inputs that a model computed from the data (frozen sentence embeddings) differ in their last
    # bits between CPU instruction sets, while what was read is the same: for such inputs the
    # contents hash covers the examples' ids (B, n_support + n_query) and the key of the data and
    # the model that computed them (``inputs_key``) instead of the floats.
    example_ids: torch.Tensor | None = None
    inputs_key: bytes | None = None

    def __len__(self) -> int:
        return self.support_x.shape[0]

    def to(self, device: torch.device | str) -> TaskBatch:
        return self.map_tensors(lambda t: t.to(device, non_blocking=True), identity=self.identity)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.support_x, self.support_y, self.query_x, self.query_y)

    def slice(self, start: int, stop: int) -> TaskBatch:
        return self.map_tensors(lambda t: t[start:stop])

    def map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor], identity: bytes | None = None) -> TaskBatch:
        """``function`` applied to every tensor, the optional class indices included."""
        support_x, support_y, query_x, query_y = (function(t) for t in self.tensors())
        support_classes, query_classes, example_ids = (None if t is None else function(t) for t in
                                                       (self.support_classes, self.query_classes, self.example_ids))
        return TaskBatch(support_x, support_y, query_x, query_y, identity, support_classes, query_classes,
                         example_ids, self.inputs_key)

    def update_hash(self, digest: Any) -> None:
        """Feed what determines these episodes into ``digest`` (hashlib object)."""
        if self.identity is not None:
            digest.update(self.identity)
            return
        for tensor in self.tensors():
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())

    def update_contents_hash(self, digest: Any) -> None:
        """Feed the tensors exactly as the algorithms receive them into ``digest``, episode by episode,
        so the hash covers the bytes read (pixels after decoding, normalisation, token ids) and does
        not depend on how many episodes were materialised at once. Model-computed inputs count by
        the ids of the examples they were computed from (``example_ids``)."""
        read = (self.support_y, self.query_y, self.example_ids) if self.example_ids is not None else self.tensors()
        tensors = [tensor.detach().cpu().contiguous() for tensor in read]
        layout = "".join(f"{t.dtype}{tuple(t.shape[1:])}" for t in tensors).encode() + (self.inputs_key or b"")
        for i in range(len(self)):
            digest.update(layout)
            for tensor in tensors:
                digest.update(tensor[i].numpy().tobytes())


def draw_episodes(
    suite_name: str, split: str, seed: int, indices: range, class_sizes: torch.Tensor, width: int, ways: int, k: int,
    groups: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each episode's classes (B, ways) and examples (B, ways, k), drawn on the CPU from a generator
    seeded by (suite, split, seed, index) only.

    ``class_sizes`` (n_classes,) gives each class of the split its number of examples, ``width`` >=
    all of them the length of the random order drawn per class (the dataset's largest class): an
    episode takes ``ways`` classes by a random permutation, and of each the first ``k`` of a random
    order of its own examples (positions past a class's size sort last, so they are never taken).
    ``groups`` (grouped sampling): the split's classes by group, each a tensor of class positions;
    an episode then first draws one group, uniformly, and its ``ways`` classes from that group.
    """
    beyond = torch.arange(width).unsqueeze(0) >= class_sizes.unsqueeze(1)  # (n_classes, width)
    ragged = bool(beyond.any())
    classes = torch.empty(len(indices), ways, dtype=torch.long)
    examples = torch.empty(len(indices), ways, k, dtype=torch.long)
    gen = torch.Generator()
    for row, index in enumerate(indices):
        gen.manual_seed(derive_seed(suite_name, split, seed, index))
        if groups is None:
            chosen = torch.randperm(len(class_sizes), generator=gen)[:ways]
        else:
            group = groups[int(torch.randint(len(groups), (1,), generator=gen))]
            chosen = group[torch.randperm(len(group), generator=gen)[:ways]]
        keys = torch.rand(ways, width, generator=gen)
        if ragged:
            keys[beyond[chosen]] = 2.0
        classes[row], examples[row] = chosen, keys.argsort(dim=1)[:, :k]
    return classes, examples


def class_groups(class_names: list[str], ways: int) -> list[torch.Tensor]:
    """Positions of ``class_names`` grouped by the name's first part (Omniglot: the alphabet), for
    grouped sampling; groups with fewer than ``ways`` classes cannot make an episode and are left out."""
    by_group: dict[str, list[int]] = {}
    for position, name in enumerate(class_names):
        by_group.setdefault(class_group(name), []).append(position)
    return [torch.tensor(members) for _, members in sorted(by_group.items()) if len(members) >= ways]


def classification_batch(x: torch.Tensor, classes: torch.Tensor, shots: int, identity: bytes,
                         example_ids: torch.Tensor | None = None, inputs_key: bytes | None = None) -> TaskBatch:
    """Split (B, ways, shots + queries, *input_shape) examples, ordered class by class, into support and query sets.

    Labels are 0..ways-1 in the order of ``classes`` (B, ways), each class's index in its split.
    ``example_ids`` (B, ways, shots + queries) with ``inputs_key``: see ``TaskBatch.example_ids``.
    """
    b, ways, k = x.shape[:3]
    labels = torch.arange(ways, device=x.device).view(1, ways, 1)

    def per_example(values: torch.Tensor, n: int) -> torch.Tensor:
        return values.expand(b, ways, n).flatten(1)

    def support_and_query(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, ways, shots + queries, ...) -> (B, ways * shots, ...), (B, ways * queries, ...)."""
        return values[:, :, :shots].flatten(1, 2), values[:, :, shots:].flatten(1, 2)

    support_x, query_x = support_and_query(x)
    return TaskBatch(
        support_x=support_x,
        support_y=per_example(labels, shots),
        query_x=query_x,
        query_y=per_example(labels, k - shots),
        identity=identity,
        support_classes=per_example(classes.unsqueeze(-1), shots),
        query_classes=per_example(classes.unsqueeze(-1), k - shots),
        example_ids=None if example_ids is None else torch.cat(support_and_query(example_ids), dim=1),
        inputs_key=inputs_key,
    )


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
