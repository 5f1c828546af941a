r"""Summarises converted TFRecords: the tool to run to trust a conversion.

  python -m emotion_e2e.inspect_records 'tfrecords/demo/dev-*.tfrecord' [--csv=frames.csv]

Prints one line per recording (id, partition, frames, face-found ratio, label
means); ``--csv`` also writes one row per frame (recording, frame, time, labels,
face_found, audio RMS). Every shard is checked: one recording, frames 1..N in order,
finite audio.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys

import numpy as np
from absl import app, flags

_CSV = flags.DEFINE_string("csv", None, "Also write one row per frame to this CSV file.")

_BLOCK = 1024  # records parsed per call


@dataclasses.dataclass
class RecordingFrames:
    """All frames of one shard as NumPy arrays, ``(num_frames,)`` or ``(num_frames, dims)``."""

    path: str
    recording_id: str
    partition: str
    frame: np.ndarray
    time: np.ndarray
    labels: dict  # name -> (num_frames,)
    face_found: np.ndarray | None
    audio_rms: np.ndarray | None


def _layout(path):
    """Modalities, label names and samples per frame, from the shard's first record."""
    from emotion_e2e.data import schema  # noqa: PLC0415

    feats = schema.first_features(path)
    modalities = tuple(m for m, key in (("audio", schema.AUDIO), ("face", schema.FACE)) if key in feats)
    labels = tuple(sorted(k[len(schema.LABEL_PREFIX):] for k in feats if k.startswith(schema.LABEL_PREFIX)))
    spf = len(feats[schema.AUDIO].float_list.value) if "audio" in modalities else 0
    return modalities, labels, spf


def read_shard(path: str) -> RecordingFrames:
    """Reads and checks one shard; a truncated or corrupt file, or one with NaN or infinite audio,
    raises DataError naming it (and the recording and first such frame)."""
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.data import schema  # noqa: PLC0415
    from emotion_e2e.errors import DataError  # noqa: PLC0415

    modalities, label_names, spf = _layout(path)
    spec = schema.feature_spec(samples_per_frame=spf, modalities=modalities, label_names=label_names)
    parts = []
    try:
        for block in tf.data.TFRecordDataset(path).batch(_BLOCK):
            f = tf.io.parse_example(block, spec)
            part = {k: f[k].numpy() for k in (schema.RECORDING_ID, schema.PARTITION, schema.FRAME,
                                               schema.NUM_FRAMES, schema.TIME)}
            if "audio" in modalities:
                audio = f[schema.AUDIO].numpy()
                part["rms"] = np.sqrt(np.mean(np.square(audio), axis=1))
                part["finite"] = np.isfinite(audio).all(axis=1)
            if "face" in modalities:
                part["face_found"] = f[schema.FACE_FOUND].numpy()
            for n in label_names:
                part[n] = f[schema.label_key(n)].numpy()
            parts.append(part)
    except tf.errors.OpError as e:
        raise DataError(f"TFRecord file {path} is truncated or corrupt: {e.message.splitlines()[0]}") from e
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    ids, n = set(cat[schema.RECORDING_ID].tolist()), len(cat[schema.FRAME])
    expected = int(cat[schema.NUM_FRAMES][0])
    if len(ids) != 1 or not np.array_equal(cat[schema.FRAME], np.arange(1, n + 1)) or n != expected:
        raise DataError(f"TFRecord file {path}: expected frames 1..{expected} of one recording, "
                        f"received {n} frames of recordings {sorted(i.decode() for i in ids)}")
    if "finite" in cat and not cat["finite"].all():
        first = int(np.argmin(cat["finite"]))
        raise DataError(f"TFRecord file {path} (recording {cat[schema.RECORDING_ID][0].decode()}): frame "
                        f"{cat[schema.FRAME][first]} holds NaN or infinite audio samples "
                        f"({int((~cat['finite']).sum())} of {n} frames do); expected finite audio")
    return RecordingFrames(path, cat[schema.RECORDING_ID][0].decode(), cat[schema.PARTITION][0].decode(),
                           cat[schema.FRAME], cat[schema.TIME], {k: cat[k] for k in label_names},
                           cat.get("face_found"), cat.get("rms"))


def summary_line(r: RecordingFrames) -> str:
    faces = "-" if r.face_found is None else f"{r.face_found.mean():.3f}"
    labels = " ".join(f"{k}={v.mean():+.3f}" for k, v in r.labels.items()) or "(unlabelled)"
    return f"{r.recording_id:<16} {r.partition:<8} {len(r.frame):>7} {faces:>6}  {labels}"


def write_csv(recordings, path):
    names = sorted({k for r in recordings for k in r.labels})
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["recording_id", "frame", "time", *names, "face_found", "audio_rms"])
        for r in recordings:
            for j in range(len(r.frame)):
                w.writerow([r.recording_id, int(r.frame[j]), f"{r.time[j]:.2f}",
                            *(f"{r.labels[n][j]:.6g}" if n in r.labels else "" for n in names),
                            "" if r.face_found is None else int(r.face_found[j]),
                            "" if r.audio_rms is None else f"{r.audio_rms[j]:.6g}"])
    os.replace(tmp, path)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError("give one or more TFRecord file patterns, e.g. 'tfrecords/demo/dev-*.tfrecord'")
    from emotion_e2e.data.reader import list_shards  # noqa: PLC0415
    from emotion_e2e.errors import DataError  # noqa: PLC0415

    try:
        recordings = [read_shard(p) for p in list_shards(argv[1:])]
    except DataError as e:
        sys.exit(f"error: {e}")
    print(f"{'recording':<16} {'part.':<8} {'frames':>7} {'faces':>6}  label means")
    for r in recordings:
        print(summary_line(r))
    total = sum(len(r.frame) for r in recordings)
    print(f"{len(recordings)} recordings, {total} frames")
    if _CSV.value:
        write_csv(recordings, _CSV.value)
        print(f"per-frame rows: {_CSV.value}")


if __name__ == "__main__":
    app.run(main)
