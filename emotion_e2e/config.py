"""Frozen, validated configuration shared by the converters, the reader, the model and training.

Every number of docs/design.md lives here as a default; library code receives the piece
it needs (``TimeBase``, ``FaceConfig``, ``InputConfig``, ``ReaderConfig``, ``ModelConfig``)
and never reads flags. Each value is stored once: what a frame holds (modalities, label
names, samples per frame, face size) is ``InputConfig``, shared by the reader and the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing

# The two modalities, named as the records and the model's inputs name them: "audio" is the
# raw waveform, "face" the face crop cut from the video.
MODALITIES = ("audio", "face")
# The kind of media stream each modality is read from: an audio track, a video.
STREAM_KIND = {"audio": "audio", "face": "video"}
LABEL_NAMES = ("arousal", "valence")


def check_modalities(modalities, owner: str) -> tuple[str, ...]:
    """``modalities`` as a tuple; a ValueError naming ``owner`` unless it is a non-empty subset
    of ``MODALITIES`` without repeats."""
    modalities = tuple(modalities)
    if not modalities or any(m not in MODALITIES for m in modalities) or len(set(modalities)) != len(modalities):
        raise ValueError(f"{owner}: modalities must be a non-empty subset of {MODALITIES}. "
                         f"Received: modalities={modalities}")
    return modalities


def _fail(cls, msg):
    raise ValueError(f"{cls.__name__}: {msg}")


@dataclasses.dataclass(frozen=True)
class TimeBase:
    """The 40 ms frame grid and the audio rate (docs/design.md §2).

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


FACE_DETECTORS = ("yunet", "haar", "mediapipe")
# Detectors that give no eye landmarks, which FaceConfig.align="eyes" needs.
FACE_DETECTORS_WITHOUT_EYES = ("haar",)
# "none": the square is cut upright from the frame; "eyes": the frame is first rotated about the
# box's centre so that the detector's eye landmarks lie level (docs/design.md §3).
FACE_ALIGNMENTS = ("none", "eyes")
# How the converter picks the one person it keeps among a recording's face tracks (the main track):
# "most_found", the track found in the most frames, ties broken by the larger mean box area.
MAIN_TRACK_RULES = ("most_found",)


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    """Face tracks (docs/design.md §3): detections linked across frames, one id per person.

    The defaults were measured with Haar on 480×360 H.264 clips of the astronaut's face and a
    smaller, mirrored, recoloured copy walking past each other, the small one in front hiding
    the other's face for 7-8 frames, at the same height and 20 or 40 px apart
    (tests/data/test_tracking.py has one of them): ``detect_every`` 1, 2, 3, 5, 8 and 10 all
    gave the same two tracks without an identity switch; 5 runs the whole-frame search on a
    fifth of the frames, for about 20 % less time there with Haar (more on larger frames). A
    window costs MediaPipe as much as a whole frame, so with it 1 is faster. ``smoothing`` 0.5
    lost the hidden face's id where the faces cross at the same height (the half-hidden face's
    last box, shifted, took half the velocity), 0.3 and 0.2 kept it; there too ``min_iou`` 0.5
    lost it (the face coming out from behind overlaps its prediction by 0.3-0.5), 0.3 and 0.2
    kept it; ``search_scale`` 1.5, 2 and 3 gave the same tracks. ``max_gap`` 25 frames (1 s)
    bridges those occlusions three times over and a turned head; a face away longer is a new
    track. With YuNet, the default detector since, ``detect_every`` 1 to 10 give the same two
    tracks on that clip too, and on 1280×720 (the faces benchmark) 5 costs 4.5 ms a frame with
    one face against 12.8 ms for 1, and 8.7 against 11.5 ms with three faces.
    """

    # The full-frame detector runs on frames 1, 1 + detect_every, ...; on the frames between, each
    # live track is looked for in a window around its predicted box. 1: full detection on every frame.
    detect_every: int = 5
    search_scale: float = 2.0  # the window's side, × the predicted box's (clipped to the frame)
    max_gap: int = 25  # frames a track survives without a detection (its box carried by the prediction)
    min_iou: float = 0.3  # a detection and a track's predicted box overlapping less are never paired
    smoothing: float = 0.3  # the newest velocity measurement's weight in the track's velocity
    main_track: str = "most_found"  # the rule that picks the converter's person (MAIN_TRACK_RULES)

    def __post_init__(self):
        if self.detect_every < 1 or self.max_gap < 0 or self.search_scale < 1:
            _fail(type(self), f"need detect_every >= 1, max_gap >= 0, search_scale >= 1. Received: "
                              f"detect_every={self.detect_every}, max_gap={self.max_gap}, "
                              f"search_scale={self.search_scale}")
        if not 0 < self.min_iou < 1 or not 0 < self.smoothing <= 1:
            _fail(type(self), f"need 0 < min_iou < 1 and 0 < smoothing <= 1. Received: min_iou={self.min_iou}, "
                              f"smoothing={self.smoothing}")
        if self.main_track not in MAIN_TRACK_RULES:
            _fail(type(self), f"main_track must be one of {MAIN_TRACK_RULES}. Received: {self.main_track!r}")


@dataclasses.dataclass(frozen=True)
class FaceConfig:
    """Face crops (docs/design.md §3)."""

    size: int = 96
    margin: float = 0.2  # the square's side is (1 + margin) × the detected box's longer side
    jpeg_quality: int = 95
    # "yunet" (OpenCV Zoo's YuNet, its model inside this package), "haar" (OpenCV's bundled
    # cascade) or "mediapipe" (the mediapipe extra). YuNet is the default: it finds every face
    # from 1/10 of the frame height up in 640×480 and 1280×720 like the other two, 2.2-2.6× as
    # fast as Haar and 12-15× on frames without a face, with no dependency beyond OpenCV
    # (benchmark --suite=faces, README "Faces").
    detector: str = "yunet"
    # Frames are downscaled to this longer side for detection. 640, not less: at 320 a 1280×720
    # frame is searched at 320×180, where a face of 1/10 of the frame height is 18 px, under
    # the Haar cascade's 24 px window and too small for YuNet, and neither finds it; at 640 it
    # is 36 px, and 640×480 webcam frames are searched at full size (benchmark --suite=faces).
    detect_max_side: int = 640
    # One of FACE_ALIGNMENTS. "none" by default: the paper's crops are not aligned, so the
    # network must learn heads as they roll (docs/design.md §3).
    align: str = "none"
    # Faces are tracked across frames and the crops follow one track (the main track): recorded
    # with the crop settings because predict must track as the converter did.
    track: TrackConfig = TrackConfig()

    def __post_init__(self):
        if self.size <= 0 or self.margin < 0 or not 90 <= self.jpeg_quality <= 100:
            _fail(type(self), f"need size > 0, margin >= 0, 90 <= jpeg_quality <= 100. Received: "
                              f"size={self.size}, margin={self.margin}, jpeg_quality={self.jpeg_quality}")
        if self.detector not in FACE_DETECTORS:
            _fail(type(self), f"detector must be one of {FACE_DETECTORS}. Received: detector={self.detector!r}")
        if self.detect_max_side < 32:
            _fail(type(self), f"detect_max_side must be >= 32. Received: {self.detect_max_side}")
        if self.align not in FACE_ALIGNMENTS:
            _fail(type(self), f"align must be one of {FACE_ALIGNMENTS}. Received: align={self.align!r}")
        if self.align == "eyes" and self.detector in FACE_DETECTORS_WITHOUT_EYES:
            with_eyes = tuple(d for d in FACE_DETECTORS if d not in FACE_DETECTORS_WITHOUT_EYES)
            _fail(type(self), f"align='eyes' needs the eye landmarks of detector {' or '.join(with_eyes)}; "
                              f"{self.detector} gives none. Received: detector={self.detector!r}, align='eyes'")


AUGMENT_PER = ("frame", "window")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Face augmentation used in training only (docs/design.md §6).

    ``per``: ``'frame'`` draws the crop, saturation and brightness anew for every frame (the
    authors' pipeline augments each frame before windows are formed); ``'window'`` draws them
    once per window, so they stay steady over its frames.
    """

    resize: int = 110
    saturation_lower: float = 0.5
    saturation_upper: float = 1.5
    brightness_delta: float = 32.0 / 255.0
    per: str = "frame"

    def __post_init__(self):
        if not 0 <= self.saturation_lower <= self.saturation_upper or self.brightness_delta < 0:
            _fail(type(self), f"need 0 <= saturation_lower <= saturation_upper and brightness_delta >= 0. "
                              f"Received: {self}")
        if self.per not in AUGMENT_PER:
            _fail(type(self), f"per must be one of {AUGMENT_PER}. Received: per={self.per!r}")


@dataclasses.dataclass(frozen=True)
class InputConfig:
    """What one frame of a window holds: the one home of these values for the reader (what
    to parse) and the model (its inputs and outputs). docs/design.md §2–§4.

    ``modalities``: ``'audio'`` (``samples_per_frame`` raw samples) and/or ``'face'`` (a
    ``face_size``² RGB crop). ``label_names``: the label dimensions, one model output each
    (empty for the reader of an unlabelled partition).
    """

    modalities: tuple[str, ...] = MODALITIES
    label_names: tuple[str, ...] = LABEL_NAMES
    samples_per_frame: int = 640
    face_size: int = 96

    def __post_init__(self):
        object.__setattr__(self, "modalities", check_modalities(self.modalities, type(self).__name__))
        object.__setattr__(self, "label_names", tuple(self.label_names))
        if len(set(self.label_names)) != len(self.label_names):
            _fail(type(self), f"label_names must not repeat. Received: label_names={self.label_names}")
        if self.samples_per_frame <= 0 or self.face_size <= 0:
            _fail(type(self), f"samples_per_frame and face_size must be positive. Received: "
                              f"samples_per_frame={self.samples_per_frame}, face_size={self.face_size}")


@dataclasses.dataclass(frozen=True)
class ReaderConfig:
    """How the tf.data reader cuts, shuffles and batches windows (docs/design.md §6, §7).

    ``seq_len`` is the training window; validation during training and ``eval.py`` cut
    windows of ``eval_seq_len`` frames whatever it is (``for_evaluation``). ``batch_size``
    is the global batch; with an ``InputContext`` each input pipeline batches
    ``batch_size / num_replicas_in_sync`` windows.
    """

    seq_len: int = 150
    eval_seq_len: int = 150
    batch_size: int = 2
    shuffle_buffer: int = 64  # in windows
    cycle_length: int = 8  # recordings read at once
    augment: AugmentConfig | None = AugmentConfig()

    def __post_init__(self):
        if min(self.seq_len, self.eval_seq_len, self.batch_size, self.shuffle_buffer, self.cycle_length) <= 0:
            _fail(type(self), f"seq_len, eval_seq_len, batch_size, shuffle_buffer and cycle_length must be positive. "
                              f"Received: {self}")

    def for_evaluation(self, *, batch_size: int | None = None, eval_seq_len: int | None = None) -> ReaderConfig:
        """This reader for an evaluation pass: windows of ``eval_seq_len`` frames (this config's
        unless given), ``batch_size`` windows per batch (this config's unless given), no
        augmentation."""
        seq_len = eval_seq_len or self.eval_seq_len
        return dataclasses.replace(self, seq_len=seq_len, eval_seq_len=seq_len,
                                   batch_size=batch_size or self.batch_size, augment=None)


@dataclasses.dataclass(frozen=True)
class AudioNetConfig:
    """The raw-audio CNN (docs/design.md §5); defaults are the authors' released configuration.
    Its input length is ``InputConfig.samples_per_frame``."""

    input_dropout: float = 0.5
    conv1_filters: int = 40
    conv1_kernel: int = 20
    pool1: int = 2  # max-pool over time: 16 kHz → 8 kHz
    conv2_filters: int = 40
    conv2_kernel: int = 40
    channel_pool: int = 10  # max-pool across channels in groups of this size
    bn_momentum: float = 0.997
    bn_epsilon: float = 1e-5
    l2: float = 1e-4

    def __post_init__(self):
        if self.conv2_filters % self.channel_pool:
            _fail(type(self), f"conv2_filters must be a multiple of channel_pool. Received: {self}")
        if not 0 <= self.input_dropout < 1:
            _fail(type(self), f"input_dropout must be in [0, 1). Received: {self.input_dropout}")

    def num_features(self, samples_per_frame: int) -> int:
        """Width of the network's output for frames of ``samples_per_frame`` samples."""
        if samples_per_frame % self.pool1:
            _fail(type(self), f"samples_per_frame must be a multiple of pool1 ({self.pool1}). "
                              f"Received: samples_per_frame={samples_per_frame}")
        return samples_per_frame // self.pool1 * self.conv2_filters // self.channel_pool


# resnet50: TF-slim's ResNet-v1-50, the authors' network; resnet50_keras: keras.applications'
# ResNet50, the one with ImageNet weights; resnet18 / resnet10: CPU-sized demos.
FACE_BACKBONES = ("resnet50", "resnet50_keras", "resnet18", "resnet10")
IMAGENET_BACKBONE = "resnet50_keras"


@dataclasses.dataclass(frozen=True)
class FaceNetConfig:
    """The face network: a residual backbone on the face crop in [0, 1], global average pooled
    (docs/design.md §5). Its input size is ``InputConfig.face_size``.

    ``weights`` is ``'none'`` (random init), ``'imagenet'`` (opt-in: downloads, resnet50_keras
    only) or the path of a local weights file.
    """

    backbone: str = "resnet50"
    weights: str = "none"
    l2: float = 1e-4
    bn_momentum: float = 0.997

    def __post_init__(self):
        if self.backbone not in FACE_BACKBONES:
            _fail(type(self), f"backbone must be one of {FACE_BACKBONES}. Received: backbone={self.backbone!r}")
        if self.weights == "imagenet" and self.backbone != IMAGENET_BACKBONE:
            _fail(type(self), f"ImageNet weights exist for {IMAGENET_BACKBONE} (keras.applications' ResNet50) "
                              f"only. Received: backbone={self.backbone!r}")


RECURRENT_CELLS = ("peephole", "standard")


@dataclasses.dataclass(frozen=True)
class RecurrentConfig:
    """Stacked LSTMs over the sequence (docs/design.md §5)."""

    layers: int = 2
    units: int = 256
    cell: str = "peephole"  # "peephole" (the paper's) or "standard" (cuDNN-eligible keras.layers.LSTM)
    cell_clip: float = 100.0
    forget_bias: float = 1.0

    def __post_init__(self):
        if self.cell not in RECURRENT_CELLS:
            _fail(type(self), f"cell must be one of {RECURRENT_CELLS}. Received: cell={self.cell!r}")
        if self.layers < 0 or self.units <= 0:
            _fail(type(self), f"need layers >= 0 and units > 0. Received: layers={self.layers}, units={self.units}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The networks: per-frame feature networks, the LSTMs (fusion and head follow from the
    ``InputConfig`` the model is built for)."""

    audio: AudioNetConfig = AudioNetConfig()
    face: FaceNetConfig = FaceNetConfig()
    recurrent: RecurrentConfig = RecurrentConfig()


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam (docs/design.md §6)."""

    learning_rate: float = 1e-4
    epsilon: float = 1e-8

    def __post_init__(self):
        if self.learning_rate <= 0 or self.epsilon <= 0:
            _fail(type(self), f"learning_rate and epsilon must be positive. Received: {self}")


STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
PRECISIONS = ("none", "bf16", "fp16")
# Seconds train.py and eval.py wait for the first look-up in a remote data or run directory
# (s3://, gs://, hdfs://...) before they stop, saying the store could not be reached
# (--storage_timeout). An environment setting, not part of a run: it is not saved in config.json.
STORAGE_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: data, inputs, reader, model, optimiser and schedule. Saved as
    ``config.json`` in the run directory, from which ``eval.py`` rebuilds the model."""

    data_dir: str
    inputs: InputConfig = InputConfig()
    reader: ReaderConfig = ReaderConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    train_partition: str = "train"
    eval_partition: str = "dev"
    epochs: int = 10
    steps_per_epoch: int = 100
    seed: int = 0
    strategy: str = "default"
    tpu: str = ""  # --strategy=tpu: a TPU name, "local" or grpc://host:port
    connect_timeout: float = 120.0  # seconds a multi-worker or TPU strategy waits for its cluster
    backup_every_steps: int = 0  # a backup every N optimizer steps, besides every epoch end (0: epoch ends only)
    mixed_precision: str = "none"
    jit_compile: bool = False
    init_from: tuple[str, ...] = ()  # unimodal run directories whose feature networks start this run

    def __post_init__(self):
        object.__setattr__(self, "init_from", tuple(self.init_from))
        if self.strategy not in STRATEGIES:
            _fail(type(self), f"strategy must be one of {STRATEGIES}. Received: {self.strategy!r}")
        if self.backup_every_steps < 0 or not self.connect_timeout > 0:
            _fail(type(self), f"backup_every_steps must be >= 0 and connect_timeout > 0. Received: backup_every_steps="
                              f"{self.backup_every_steps}, connect_timeout={self.connect_timeout}")
        if self.mixed_precision not in PRECISIONS:
            _fail(type(self), f"mixed_precision must be one of {PRECISIONS}. Received: {self.mixed_precision!r}")
        if self.epochs <= 0 or self.steps_per_epoch <= 0:
            _fail(type(self), f"epochs and steps_per_epoch must be positive. Received: epochs={self.epochs}, "
                              f"steps_per_epoch={self.steps_per_epoch}")
        if not self.inputs.label_names:
            _fail(type(self), "inputs.label_names must not be empty: the model learns them")
        augment = self.reader.augment
        if "face" in self.inputs.modalities and augment is not None and augment.resize < self.inputs.face_size:
            _fail(type(self), f"augment.resize ({augment.resize}) must be >= face_size ({self.inputs.face_size})")
        if "audio" in self.inputs.modalities:
            self.model.audio.num_features(self.inputs.samples_per_frame)


def to_dict(cfg) -> dict:
    """A config dataclass as plain JSON-ready data."""
    return dataclasses.asdict(cfg)


def from_dict(cls, data: dict):
    """Rebuilds config dataclass ``cls`` (nested ones too) from ``to_dict`` output.

    Unknown keys are an error: a config saved by another version must not be half-read.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {unknown}. Expected some of {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        candidates = [t for t in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(t)]
        if candidates and isinstance(value, dict):
            value = from_dict(candidates[0], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)
