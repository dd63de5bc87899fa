"""Dataset readers for the classification suites, one module per data kind.

``DATA_MODULES`` maps a suite's ``data.kind`` to its module. Every module there provides
``required_files(config)`` (raises a ``BenchError`` saying what to fetch when something is missing)
and ``class_sizes(config)`` (examples per class per split, without decoding any); the image kinds
provide ``load_split_images(config)``, and the downloadable ones ``DOWNLOADS``. Modules are imported
when a suite of their kind is used, so a missing optional dependency of one kind never blocks another.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from bench.config import (
    CIFAR100Data,
    CUBData,
    ImageFolderData,
    MiniImageNetData,
    Normalization,
    OmniglotData,
    Suite,
    TieredImageNetData,
    TinyImageNetData,
    plugin_data_kind,
)
from bench.datasets.base import ClassImages, cache_dir, data_dir

DATA_MODULES = {
    "omniglot": "bench.datasets.omniglot",
    "tiny-imagenet": "bench.datasets.tiny_imagenet",
    "cifar100": "bench.datasets.cifar100",
    "cub": "bench.datasets.cub",
    "tiered-imagenet": "bench.datasets.tiered_imagenet",
    "mini-imagenet": "bench.datasets.mini_imagenet",
    "image-folder": "bench.datasets.image_folder",
    "text": "bench.datasets.text",
}


def dataset_module(kind: str) -> ModuleType | None:
    """The reader module of a data kind (None for generated data such as sine, and for a plugin's
    kind without a reader)."""
    if kind in DATA_MODULES:
        return importlib.import_module(DATA_MODULES[kind])
    plugin = plugin_data_kind(kind)
    return importlib.import_module(plugin.reader) if plugin is not None and plugin.reader else None


def check_available(suite: Suite) -> None:
    """Raise a ``BenchError`` saying what to download, before any work, when the data is missing."""
    if module := dataset_module(suite.data.kind):
        module.required_files(suite.data)


def load_classification_data(suite: Suite) -> tuple[ClassImages, dict[str, list[int]], Normalization | None]:
    """The suite's images, each split's class indices into them, and the pixel normalisation."""
    module = dataset_module(suite.data.kind)
    if module is None or not hasattr(module, "load_split_images"):
        raise AssertionError(f"no image dataset reader for data kind {suite.data.kind!r}")
    data, splits = module.load_split_images(suite.data)
    image_kinds = (OmniglotData | TinyImageNetData | CIFAR100Data | CUBData | TieredImageNetData | MiniImageNetData
                   | ImageFolderData)
    assert isinstance(suite.data, image_kinds), "image data (its reader ran)"
    return data, splits, suite.data.normalization


__all__ = ["DATA_MODULES", "ClassImages", "cache_dir", "data_dir", "dataset_module", "load_classification_data"]
