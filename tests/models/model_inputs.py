"""Random model inputs for a ModelConfig, shared by the model tests."""

import numpy as np


def random_inputs(cfg, b=1, t=3, seed=0, audio_amplitude=1.0):
    """``{'audio': (b, t, samples_per_frame), 'face': (b, t, size, size, 3)}`` for ``cfg.modalities``:
    audio uniform in ±``audio_amplitude``, faces uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = {}
    if "audio" in cfg.modalities:
        x["audio"] = rng.uniform(-audio_amplitude, audio_amplitude,
                                 (b, t, cfg.audio.samples_per_frame)).astype("float32")
    if "video" in cfg.modalities:
        s = cfg.visual.face_size
        x["face"] = rng.uniform(0, 1, (b, t, s, s, 3)).astype("float32")
    return x
