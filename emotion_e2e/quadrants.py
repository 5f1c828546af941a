"""The quadrant of the valence-arousal plane each frame's prediction lies in (docs/design.md §10).

Russell's circumplex puts emotions on two axes, valence (unpleasant to pleasant) and arousal
(calm to activated); the quadrants carry its conventional names:

    arousal ≥ 0, valence ≥ 0: "excited"  (joy, enthusiasm)
    arousal ≥ 0, valence < 0: "tense"    (anger, fear, stress)
    arousal < 0, valence < 0: "sad"      (sadness, boredom)
    arousal < 0, valence ≥ 0: "calm"     (contentment, relaxation)

and a frame whose arousal and valence are both within ``neutral_band`` of 0 is "neutral". They
name where a prediction lies on the gold standard's scale (RECOLA's ratings run from -1 to 1,
0 being neither), not an emotion recognised as such.
"""

from __future__ import annotations

import numpy as np

from emotion_e2e.errors import ConfigError

AROUSAL, VALENCE = "arousal", "valence"
NEUTRAL = "neutral"
# By (arousal ≥ 0, valence ≥ 0).
NAMES = {(True, True): "excited", (True, False): "tense", (False, False): "sad", (False, True): "calm"}
QUADRANTS = (*NAMES.values(), NEUTRAL)  # every value of the column, in the summary's order
# Both dimensions within this distance of 0: neutral (a twentieth of RECOLA's [-1, 1] scale).
DEFAULT_NEUTRAL_BAND = 0.1


def check(label_names, neutral_band: float) -> None:
    """ConfigError unless the model predicts arousal and valence and ``neutral_band`` is >= 0."""
    missing = [n for n in (AROUSAL, VALENCE) if n not in label_names]
    if missing:
        raise ConfigError(f"quadrants need the {AROUSAL} and {VALENCE} outputs; the model predicts "
                          f"{list(label_names)}")
    if not neutral_band >= 0:
        raise ConfigError(f"the neutral band must be 0 or more. Received: {neutral_band}")


def quadrants(arousal, valence, neutral_band: float) -> np.ndarray:
    """The quadrant name (``QUADRANTS``) of each pair of ``arousal`` and ``valence`` values."""
    a, v = np.asarray(arousal, np.float64), np.asarray(valence, np.float64)
    out = np.empty(a.shape, object)
    for (high, positive), name in NAMES.items():
        out[((a >= 0) == high) & ((v >= 0) == positive)] = name
    out[(np.abs(a) <= neutral_band) & (np.abs(v) <= neutral_band)] = NEUTRAL
    return out


def shares(names) -> dict[str, float]:
    """``{quadrant: share of the frames}`` for every one of ``QUADRANTS`` (0 where none)."""
    names = np.asarray(names, object)
    return {q: float(np.mean(names == q)) if len(names) else 0.0 for q in QUADRANTS}
