"""Tiny synthetic shards written with the shared schema, for reader and tool tests."""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from emotion_e2e.data import faces as faces_lib
from emotion_e2e.data import schema
from emotion_e2e.data.convert import Frame, Recording
from emotion_e2e.errors import DataError

SPF = 8  # samples per frame: small shapes keep the tests fast
FACE = 16
LABELS = ("arousal", "valence")


def frame_content(rid_index, i):
    """Audio, a face and labels that encode (recording, frame) so tests can check them."""
    audio = (np.arange(SPF, dtype=np.float32) + 1000 * rid_index + i) / 1e4
    face = np.full((FACE, FACE, 3), (10 * rid_index + 3 * i) % 256, np.uint8)
    labels = np.array([rid_index + i / 1000, -i / 1000], np.float32)
    return audio, face, labels


def write_shards(directory, lengths, partition="train", labelled=True, face=True, audio=True):
    """One shard per recording ``{partition}_{k}`` with ``lengths[k]`` frames; returns the paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for k, n in enumerate(lengths):
        path = os.path.join(str(directory), schema.shard_name(partition, k, len(lengths)))
        with tf.io.TFRecordWriter(path) as w:
            for i in range(1, n + 1):
                a, crop, y = frame_content(k, i)
                w.write(schema.encode_frame(
                    recording_id=f"{partition}_{k}", partition=partition, frame=i, num_frames=n, time=0.04 * i,
                    audio=a if audio else None,
                    face_jpeg=faces_lib.encode_jpeg(crop, 95) if face else None, face_found=i % 3 != 0,
                    labels=dict(zip(LABELS, y.tolist())) if labelled else None))
        paths.append(path)
    return paths


@dataclasses.dataclass(frozen=True)
class FakeRecording(Recording):
    """In-memory recording with the content of ``frame_content``; fails at ``fail_at`` if set."""

    index: int = 0
    length: int = 5
    fail_at: int = 0
    labelled: bool = True
    label_names: tuple[str, ...] = LABELS

    def open(self, cfg):
        def frames():
            for i in range(1, self.length + 1):
                if i == self.fail_at:
                    raise DataError(f"recording {self.recording_id}, frame {i}: injected failure")
                a, face, y = frame_content(self.index, i)
                yield Frame(a, faces_lib.encode_jpeg(face, 95), i % 2 == 1, y if self.labelled else None)
        return self.length, (self.label_names if self.labelled else ()), frames()
