"""Dataset readers for the classification suites."""

from __future__ import annotations

from bench.config import Normalization, Suite
from bench.datasets.base import ClassImages, cache_dir, data_dir


def check_available(suite: Suite) -> None:
    """Raise a ``BenchError`` saying what to download, before any work, when the data is missing."""
    if suite.data.kind == "omniglot":
        from bench.datasets.omniglot import required_files

        required_files(suite.data)
    elif suite.data.kind == "tiny-imagenet":
        from bench.datasets.tiny_imagenet import required_files as tiny_files

        tiny_files(suite.data)
    elif suite.data.kind == "mini-imagenet":
        from bench.datasets.mini_imagenet import required_files as mini_files

        mini_files(suite.data)
    elif suite.data.kind == "text":
        from bench.datasets.text import required_files as text_files

        text_files(suite.data)


def load_classification_data(suite: Suite) -> tuple[ClassImages, dict[str, list[int]], Normalization | None]:
    """The suite's images, each split's class indices into them, and the pixel normalisation."""
    if suite.data.kind == "omniglot":
        from bench.datasets.omniglot import load_split_images

        data, splits = load_split_images(suite.data)
        return data, splits, suite.data.normalization
    if suite.data.kind == "tiny-imagenet":
        from bench.datasets.tiny_imagenet import load_split_images as tiny_images

        data, splits = tiny_images(suite.data)
        return data, splits, suite.data.normalization
    if suite.data.kind == "mini-imagenet":
        from bench.datasets.mini_imagenet import load_split_images as mini_images

        data, splits = mini_images(suite.data)
        return data, splits, suite.data.normalization
    raise AssertionError(f"no image dataset reader for data kind {suite.data.kind!r}")


__all__ = ["ClassImages", "cache_dir", "data_dir", "load_classification_data"]
