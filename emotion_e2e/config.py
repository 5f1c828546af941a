"""Frozen, validated configuration shared by the converters and the readers.

Every number of SPEC lives here as a default; library code receives the piece
it needs (``TimeBase``, ``FaceConfig``, ``ReaderConfig``) and never reads flags.
"""

from __future__ import annotations

import dataclasses
import json
import math

MODALITIES = ("audio", "video")


def _fail(cls, msg):
    raise ValueError(f"{cls.__name__}: {msg}")


@dataclasses.dataclass(frozen=True)
class TimeBase:
    """The 40 ms frame grid and the audio rate (SPEC "Time base and alignment").

    Frame ``i = 1..N`` covers ``(frame_step·(i-1), frame_step·i]``.
    """

    frame_step: float = 0.04
    sample_rate: int = 16000

    def __post_init__(self):
        if self.frame_step <= 0 or self.sample_rate <= 0:
            _fail(type(self), f"frame_step and sample_rate must be positive. Received: "
                              f"frame_step={self.frame_step}, sample_rate={self.sample_rate}")
        spf = self.frame_step * self.sample_rate
        if abs(spf - round(spf)) > 1e-6:
            _fail(type(self), f"frame_step·sample_rate must be a whole number of samples. "
                              f"Received: frame_step={self.frame_step}, sample_rate={self.sample_rate}")

    @property
    def samples_per_frame(self) -> int:
        return int(round(self.frame_step * self.sample_rate))

    def frame_time(self, frame):
        """End time in seconds of 1-based frame ``frame`` (the label time)."""
        return frame * self.frame_step

    def frames_in(self, duration: float) -> int:
        """Number of frames needed to cover ``duration`` seconds (last one may be short)."""
        return int(math.ceil(duration / self.frame_step - 1e-6))


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """Face crops (SPEC "Face crops")."""

    size: int = 96
    margin: float = 0.2  # the square's side is (1 + margin) × the detected box's longer side
    jpeg_quality: int = 95
    detector: str = "haar"  # "haar" (OpenCV's bundled cascade) or "mediapipe"
    detect_max_side: int = 320  # frames are downscaled to this longer side for detection

    def __post_init__(self):
        if self.size <= 0 or self.margin < 0 or not 90 <= self.jpeg_quality <= 100:
            _fail(type(self), f"need size > 0, margin >= 0, 90 <= jpeg_quality <= 100. Received: "
                              f"size={self.size}, margin={self.margin}, jpeg_quality={self.jpeg_quality}")
        if self.detector not in ("haar", "mediapipe"):
            _fail(type(self), f"detector must be 'haar' or 'mediapipe'. Received: detector={self.detector!r}")
        if self.detect_max_side < 32:
            _fail(type(self), f"detect_max_side must be >= 32. Received: {self.detect_max_side}")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Face augmentation used in training only (SPEC "Training")."""

    resize: int = 110
    saturation_lower: float = 0.5
    saturation_upper: float = 1.5
    brightness_delta: float = 32.0 / 255.0

    def __post_init__(self):
        if not 0 <= self.saturation_lower <= self.saturation_upper or self.brightness_delta < 0:
            _fail(type(self), f"need 0 <= saturation_lower <= saturation_upper and brightness_delta >= 0. "
                              f"Received: {self}")


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    """What the tf.data reader produces (SPEC "Training" and "Evaluation").

    ``batch_size`` is the global batch; with an ``InputContext`` each input
    pipeline batches ``batch_size / num_replicas_in_sync`` windows.
    """

    seq_len: int = 150
    batch_size: int = 2
    modalities: tuple[str, ...] = MODALITIES
    label_names: tuple[str, ...] = ("arousal", "valence")
    face_size: int = 96
    samples_per_frame: int = 640
    shuffle_buffer: int = 64  # in windows
    cycle_length: int = 8  # recordings read at once
    augment: AugmentConfig | None = AugmentConfig()

    def __post_init__(self):
        object.__setattr__(self, "modalities", tuple(self.modalities))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            _fail(type(self), f"modalities must be a non-empty subset of {MODALITIES}. "
                              f"Received: modalities={self.modalities}")
        if self.seq_len <= 0 or self.batch_size <= 0 or self.shuffle_buffer <= 0 or self.cycle_length <= 0:
            _fail(type(self), f"seq_len, batch_size, shuffle_buffer and cycle_length must be positive. "
                              f"Received: {self}")
        if self.augment is not None and self.augment.resize < self.face_size:
            _fail(type(self), f"augment.resize ({self.augment.resize}) must be >= face_size ({self.face_size})")


def to_json(cfg) -> str:
    """A config dataclass as JSON (saved next to what it produced)."""
    return json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True)
