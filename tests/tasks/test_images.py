"""Image episodes: the contents hash covers the pixels the algorithms read, not only the drawn indices."""

from __future__ import annotations

import pytest
import torch

from bench.config import load_suite
from bench.run.runner import Episodes
from tests.conftest import HAS_OMNIGLOT

pytestmark = pytest.mark.skipif(not HAS_OMNIGLOT, reason="BENCH_DATA_DIR has no Omniglot")


@pytest.fixture(scope="module")
def suite():
    return load_suite("omniglot-5w1s", tier="smoke", overrides={"test_tasks": 7})


def test_the_contents_hash_does_not_depend_on_how_episodes_are_chunked(suite):
    episodes = Episodes(suite, torch.device("cpu"))
    whole = episodes.contents_digest("test", 7)
    for chunk in (1, 3):
        other = Episodes(suite, torch.device("cpu"))
        other.source.eval_chunk = chunk
        assert other.contents_digest("test", 7) == whole
    assert episodes.contents_digest("val", 7) != whole
    assert Episodes(suite, torch.device("cpu")).contents_digest("test", 6) != whole


class _Reader:
    """Evaluates nothing: only the hashes matter here."""

    def evaluate(self, batch, steps):
        return torch.zeros(len(batch))


def test_changed_pixels_keep_the_drawn_hash_and_change_the_contents_hash(suite):
    """The drawn-episode hash is keyed by the archives and the indices; a copy of the data decoded
    differently (or damaged after its checks) reads other pixels, which the contents hash sees."""
    clean, altered = Episodes(suite, torch.device("cpu")), Episodes(suite, torch.device("cpu"))
    altered.source.images = altered.source.images.clone()
    altered.source.images[..., 0, 0] ^= 1  # the corner pixel of every image, in its last bit
    assert clean.evaluate(_Reader(), "test", 7, 0)[1] == altered.evaluate(_Reader(), "test", 7, 0)[1]
    assert clean.contents_digest("test", 7) != altered.contents_digest("test", 7)
