"""N-way K-shot image classification episodes, gathered from a cached uint8 tensor on the device."""

from __future__ import annotations

import hashlib

import torch

from bench.config import Suite
from bench.datasets import load_classification_data
from bench.tasks.base import TaskBatch, classification_batch
from bench.tasks.classes import ClassEpisodes


class ImageTasks(ClassEpisodes):
    """Episode i of (split, seed): ``ways`` classes of the split, ``shots + queries`` examples each.

    Only the indices are drawn per episode (on the CPU, from a generator seeded by (suite, split,
    seed, i)); the pixels are one gather from the dataset tensor, which lives on the device, so
    assembling a meta-batch costs no per-image Python work. Labels are 0..ways-1 in the order the
    classes were drawn; examples are ordered class by class. ``support_classes`` and ``query_classes``
    give each example's class as its index in the split's class list (0..n_train_classes-1 for training).
    """

    # Evaluation episodes materialised at once: 50 at Omniglot's 28x28, proportionally fewer for
    # larger images (50 Tiny-ImageNet episodes of MAML adaptation peaked at 11.7 GB).
    EVAL_PIXELS = 50 * 28 * 28

    def __init__(self, suite: Suite, device: torch.device) -> None:
        data, splits, normalization = load_classification_data(suite)
        self.images = data.images.to(device)
        self.dataset_key = data.key
        self.split_classes = {s: torch.tensor(ids, dtype=torch.long, device=device) for s, ids in splits.items()}
        self.n_train_classes = len(splits.get("train", []))
        self.n_per_class = data.images.shape[1]
        self.eval_chunk = max(1, self.EVAL_PIXELS // (data.images.shape[-1] * data.images.shape[-2]))
        self.device = device
        # Grey images read as colour (data.channels: 3): repeated after the gather, so the cache stays one channel.
        self.channels = max(getattr(suite.data, "channels", None) or 0, data.images.shape[2])
        if normalization is None:
            self.mean = self.std = None
        else:
            self.mean = torch.tensor(normalization.mean, device=device).view(1, 1, -1, 1, 1)
            self.std = torch.tensor(normalization.std, device=device).view(1, 1, -1, 1, 1)
        sizes = data.sizes()
        super().__init__(suite, {s: {data.class_names[i]: sizes[i] for i in ids} for s, ids in splits.items()})

    @property
    def in_shape(self) -> tuple[int, ...]:
        return (self.channels, *self.images.shape[3:])

    def batch(self, split: str, seed: int, indices: range) -> TaskBatch:
        shape = self.shapes["train" if split == "train" else "eval"]
        ways, shots, queries = shape["ways"], shape["shots"], shape["queries"]
        assert ways is not None, "a classification suite has ways (validated)"
        classes, examples = self.episode_examples(split, seed, indices)
        identity = hashlib.sha256(self.dataset_key.encode() + classes.numpy().tobytes() + examples.numpy().tobytes())
        classes, examples = classes.to(self.device), examples.to(self.device)
        dataset_classes = self.split_classes[split][classes]
        pixels = self.images[dataset_classes.unsqueeze(-1), examples]  # (B, ways, k, C, H, W) uint8
        if pixels.shape[3] != self.channels:
            pixels = pixels.expand(*pixels.shape[:3], self.channels, *pixels.shape[4:])
        x = pixels.float().div_(255).flatten(1, 2).unflatten(1, (ways, shots + queries))
        if self.mean is not None and self.std is not None:
            x = (x - self.mean.unsqueeze(1)) / self.std.unsqueeze(1)
        return classification_batch(x, classes, shots, identity.digest())
