"""What the model tests share: a model specification (networks + inputs) and random inputs for it."""

from typing import NamedTuple

import numpy as np

from emotion_e2e.config import InputConfig, ModelConfig


class Spec(NamedTuple):
    """A model to build: its networks and what its inputs and outputs hold."""

    model: ModelConfig
    inputs: InputConfig

    def build(self):
        from emotion_e2e.models import build_model  # noqa: PLC0415

        return build_model(self.model, self.inputs)

    @property
    def label_names(self):
        return self.inputs.label_names


def random_inputs(spec, b=1, t=3, seed=0, audio_amplitude=1.0):
    """``{'audio': (b, t, samples_per_frame), 'face': (b, t, size, size, 3)}`` for the modalities
    of ``spec`` (a Spec or an InputConfig): audio uniform in ±``audio_amplitude``, faces uniform in [0, 1]."""
    inputs = spec.inputs if isinstance(spec, Spec) else spec
    rng = np.random.default_rng(seed)
    x = {}
    if "audio" in inputs.modalities:
        x["audio"] = rng.uniform(-audio_amplitude, audio_amplitude,
                                 (b, t, inputs.samples_per_frame)).astype("float32")
    if "face" in inputs.modalities:
        s = inputs.face_size
        x["face"] = rng.uniform(0, 1, (b, t, s, s, 3)).astype("float32")
    return x
