"""emotion_e2e.quadrants: the valence-arousal plane's quadrant of each frame."""

import numpy as np
import pytest

from emotion_e2e import quadrants
from emotion_e2e.errors import ConfigError


def reference(a: float, v: float, band: float) -> str:
    """One frame, written out case by case."""
    if abs(a) <= band and abs(v) <= band:
        return "neutral"
    if a >= 0:
        return "excited" if v >= 0 else "tense"
    return "calm" if v >= 0 else "sad"


def test_every_point_of_a_grid_gets_the_quadrant_of_its_signs_or_neutral_near_the_origin():
    grid = np.round(np.arange(-1, 1.0001, 0.05), 2)
    a, v = (x.ravel() for x in np.meshgrid(grid, grid))
    for band in (0.0, 0.1, 0.3):
        got = quadrants.quadrants(a, v, band)
        assert got.tolist() == [reference(x, y, band) for x, y in zip(a, v)]
    got = quadrants.quadrants([0.5, 0.5, -0.5, -0.5, 0.05, 0.05, 0.2], [0.5, -0.5, -0.5, 0.5, -0.05, 0.2, 0.05], 0.1)
    assert got.tolist() == ["excited", "tense", "sad", "calm", "neutral", "excited", "excited"]


def test_shares_cover_every_quadrant_and_sum_to_one():
    s = quadrants.shares(["calm", "calm", "neutral", "tense"])
    assert s == {"excited": 0.0, "tense": 0.25, "sad": 0.0, "calm": 0.5, "neutral": 0.25}
    assert set(quadrants.shares([])) == set(quadrants.QUADRANTS)


@pytest.mark.parametrize("labels, band, message", [
    (("arousal",), 0.1, r"quadrants need the arousal and valence outputs; the model predicts \['arousal'\]"),
    (("arousal", "valence"), -0.1, "the neutral band must be 0 or more. Received: -0.1"),
    (("arousal", "valence"), float("nan"), "the neutral band must be 0 or more. Received: nan"),
])
def test_a_model_without_both_dimensions_or_a_negative_band_is_refused(labels, band, message):
    with pytest.raises(ConfigError, match=message):
        quadrants.check(labels, band)
