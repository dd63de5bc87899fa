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


def test_grey_omniglot_read_as_colour_repeats_each_pixel_in_three_normalised_channels():
    """data.channels: 3 (the cross-domain target omniglot-5w1s-rgb64): the same episodes as the grey
    reading, each channel the grey value normalised with that channel's mean and std."""
    colour_suite = load_suite("omniglot-5w1s-rgb64", tier="smoke", overrides={"data.image_size": 28, "test_tasks": 3})
    grey_suite = load_suite("omniglot-5w1s-rgb64", tier="smoke", overrides={
        "data.image_size": 28, "test_tasks": 3, "data.channels": 1, "data.mean": None, "data.std": None})
    colour, grey = (Episodes(s, torch.device("cpu")) for s in (colour_suite, grey_suite))
    assert colour.source.in_shape == (3, 28, 28) and grey.source.in_shape == (1, 28, 28)
    x, y = colour.fixed("test", 3)[0], grey.fixed("test", 3)[0]
    assert torch.equal(x.support_y, y.support_y)
    mean, std = colour_suite.data.mean, colour_suite.data.std
    for channel in range(3):
        expected = (y.query_x[:, :, 0] - mean[channel]) / std[channel]
        torch.testing.assert_close(x.query_x[:, :, channel], expected)


def test_the_colour_fields_at_their_defaults_leave_omniglot_protocol_hashes_as_stored():
    """channels, mean and std came after the Omniglot records: at their defaults they are left out of
    the protocol, so the stored records still match the suite file."""
    from pathlib import Path

    from bench.records import load_records

    stored = {r["suite"]["protocol_hash"] for r in load_records(Path(__file__).resolve().parents[2] / "results", "omniglot-5w1s")
              if r["suite"]["tier"] == "standard"}
    assert load_suite("omniglot-5w1s", tier="standard").protocol_hash() in stored
    assert "channels" not in load_suite("omniglot-5w1s").protocol_fields()["data"]
