"""The one TFRecord schema: one ``tf.train.Example`` per 40 ms frame.

Writer (``encode_frame``) and reader (``feature_spec``) both use the names and
shapes defined here; ``tfrecords/README.md`` documents them for users.

A shard holds exactly one recording, its frames in order, so a reader that
keeps to one file can never build a window that straddles two recordings.
"""

from __future__ import annotations

import os
import re

import numpy as np
import tensorflow as tf

from emotion_e2e.errors import DataError

SCHEMA_VERSION = 1

RECORDING_ID = "recording_id"  # bytes: the recording's id
PARTITION = "partition"  # bytes: train, dev, test, ...
FRAME = "frame"  # int64: 1-based frame index i
NUM_FRAMES = "num_frames"  # int64: N, frames in the recording
TIME = "time"  # float: end of the frame's interval, frame_step·i seconds
AUDIO = "audio"  # float × samples_per_frame: raw 16 kHz samples in [-1, 1]
FACE = "face"  # bytes: JPEG of the face_size × face_size RGB face crop
FACE_FOUND = "face_found"  # int64: 1 where a face was detected in this frame, 0 where held
LABEL_PREFIX = "label/"  # float per label dimension: label/arousal, label/valence, ...

SHARD_PATTERN = "{partition}-{index:05d}-of-{count:05d}.tfrecord"
_SHARD_RE = re.compile(r"^(?P<partition>[^.].*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.tfrecord$")

# Features that every frame carries, whatever the modalities.
_META_SPEC = {
    RECORDING_ID: tf.io.FixedLenFeature([], tf.string),
    PARTITION: tf.io.FixedLenFeature([], tf.string),
    FRAME: tf.io.FixedLenFeature([], tf.int64),
    NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64),
    TIME: tf.io.FixedLenFeature([], tf.float32),
}


def shard_name(partition: str, index: int, count: int) -> str:
    return SHARD_PATTERN.format(partition=partition, index=index, count=count)


def partition_pattern(directory: str, partition: str) -> str:
    """The file pattern of all shards of ``partition`` in ``directory``."""
    return os.path.join(directory, f"{partition}-*.tfrecord")


def parse_shard_name(name: str):
    """``(partition, index, count)`` of a shard file name, or ``None``."""
    m = _SHARD_RE.match(name)
    return (m["partition"], int(m["index"]), int(m["count"])) if m else None


def first_features(path: str) -> dict:
    """The features (``{key: tf.train.Feature}``) of the first record of the shard ``path``;
    DataError naming the file when it cannot be read or holds no record."""
    try:
        first = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    except tf.errors.OpError as e:
        raise DataError(f"TFRecord file {path} is unreadable: {e.message.splitlines()[-1]}") from e
    if first is None:
        raise DataError(f"TFRecord file {path} holds no records")
    return dict(tf.train.Example.FromString(first.numpy()).features.feature)


def label_key(name: str) -> str:
    return LABEL_PREFIX + name


def feature_spec(*, samples_per_frame: int, modalities=("audio", "face"), label_names=()) -> dict:
    """Parsing spec for ``tf.io.parse_example``: metadata, the asked modalities and labels.

    Shapes come from here, never from a file: audio ``(samples_per_frame,)``,
    face a scalar JPEG string, face_found and each label a scalar.
    """
    spec = dict(_META_SPEC)
    if "audio" in modalities:
        spec[AUDIO] = tf.io.FixedLenFeature([samples_per_frame], tf.float32)
    if "face" in modalities:
        spec[FACE] = tf.io.FixedLenFeature([], tf.string)
        spec[FACE_FOUND] = tf.io.FixedLenFeature([], tf.int64)
    for name in label_names:
        spec[label_key(name)] = tf.io.FixedLenFeature([], tf.float32)
    return spec


def _bytes(v):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def _floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=v))


def encode_frame(*, recording_id: str, partition: str, frame: int, num_frames: int, time: float,
                 audio: np.ndarray | None = None, face_jpeg: bytes | None = None,
                 face_found: bool | None = None, labels: dict | None = None) -> bytes:
    """One frame as a serialized ``tf.train.Example``.

    Args:
      audio: ``(samples_per_frame,)`` float32, or None for a corpus without audio.
      face_jpeg: JPEG bytes of the face crop, or None for a corpus without faces.
      face_found: whether the crop comes from a detection in this very frame.
      labels: ``{name: value}`` for labelled partitions, None for unlabelled ones.
    """
    feats = {
        RECORDING_ID: _bytes(recording_id.encode()),
        PARTITION: _bytes(partition.encode()),
        FRAME: _int(frame),
        NUM_FRAMES: _int(num_frames),
        TIME: _floats([time]),
    }
    if audio is not None:
        feats[AUDIO] = _floats(np.asarray(audio, np.float32))
    if face_jpeg is not None:
        feats[FACE] = _bytes(face_jpeg)
        feats[FACE_FOUND] = _int(bool(face_found))
    for name, value in (labels or {}).items():
        feats[label_key(name)] = _floats([value])
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()
