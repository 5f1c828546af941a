"""The tf.data reader: sharded frame records → windows of ``seq_len`` frames.

Pipeline (each step a small function, testable alone)::

    files → shard by input pipeline → shuffle → per file: records → window → parse → check
          → interleave → shuffle windows → decode faces (+ augment) → pad → batch → prefetch

A shard holds one recording, so windows never straddle two recordings. Every
window is checked against the record metadata (one recording, consecutive
frames, the file ends at the recording's last frame): a truncated or corrupt
shard stops the pipeline with an error naming the file, never fewer frames.

Each element is a dict:
  ``audio`` (batch, seq_len, samples_per_frame) float32 — when audio is read;
  ``face`` (batch, seq_len, face_size, face_size, 3) float32 in [0, 1] and
  ``face_found`` (batch, seq_len) int32 — when faces are read;
  ``labels`` (batch, seq_len, len(label_names)) float32 — when labels are read;
  ``mask`` (batch, seq_len) float32, 1 for real frames, 0 for padding;
  ``frame`` (batch, seq_len) int64, 1-based frame index (0 for padding);
  ``recording_id`` (batch,) string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import tensorflow as tf

from emotion_e2e.config import AugmentConfig, InputConfig, ReaderConfig
from emotion_e2e.data import schema
from emotion_e2e.errors import DataError

AUTOTUNE = tf.data.AUTOTUNE
_ASSERT_PREFIX = "assertion failed: "
_CHECK_MARKS = ("TFRecord file", "no training window")  # how the reader's own checks begin


def _hidden_by_wildcard(path: str, pattern: str) -> bool:
    """True when a wildcard of ``pattern`` matched a hidden name in ``path``.

    TF's glob, unlike the shell's, lets ``*`` match a leading dot; hidden files
    and folders are the converter's temporary and backup files, never shards.
    A name the pattern spells with a dot itself is asked for and kept.
    """
    return any(name.startswith(".") and not part.startswith(".")
               for name, part in zip(reversed(path.split("/")), reversed(pattern.split("/"))))


def list_shards(file_pattern: str | Sequence[str]) -> list[str]:
    """Sorted files matching one pattern or several (local paths or ``gs://``), hidden files left out."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    files = sorted({f for p in patterns for f in tf.io.gfile.glob(p) if not _hidden_by_wildcard(f, p)})
    if not files:
        raise DataError(f"no TFRecord files match {patterns}")
    return files


def pipeline_shards(files: Sequence[str], ctx: tf.distribute.InputContext, file_pattern="") -> list[str]:
    """The shards input pipeline ``ctx.input_pipeline_id`` of ``ctx.num_input_pipelines`` reads:
    every n-th, so that the pipelines (one per worker) read disjoint shards covering all."""
    if len(files) < ctx.num_input_pipelines:
        raise DataError(f"{len(files)} shard(s) cannot feed {ctx.num_input_pipelines} input pipelines "
                        f"(one per worker): {file_pattern}")
    return list(files)[ctx.input_pipeline_id::ctx.num_input_pipelines]


def parse_window(serialized: tf.Tensor, inputs: InputConfig) -> dict:
    """Parses a window of serialized frame records ``(n,)`` with the shared schema.

    Returns ``frame`` (n,) int64, ``num_frames`` and ``recording_id`` scalars
    (``recording_ids`` (n,) for the check), and per modality ``audio``
    (n, samples_per_frame), ``face_jpeg`` (n,) string, ``face_found`` (n,) int32,
    ``labels`` (n, dims).
    """
    spec = schema.feature_spec(samples_per_frame=inputs.samples_per_frame, modalities=inputs.modalities,
                               label_names=inputs.label_names)
    f = tf.io.parse_example(serialized, spec)
    first = lambda x, empty: tf.concat([x[:1], [empty]], 0)[0]  # noqa: E731 - windows may be empty
    out = {"frame": f[schema.FRAME], "recording_ids": f[schema.RECORDING_ID],
           "num_frames": first(f[schema.NUM_FRAMES], tf.constant(-1, tf.int64)),
           "recording_id": first(f[schema.RECORDING_ID], "")}
    if "audio" in inputs.modalities:
        out["audio"] = f[schema.AUDIO]
    if "face" in inputs.modalities:
        out["face_jpeg"] = f[schema.FACE]
        out["face_found"] = tf.cast(f[schema.FACE_FOUND], tf.int32)
    if inputs.label_names:
        out["labels"] = tf.stack([f[schema.label_key(n)] for n in inputs.label_names], axis=-1)
    return out


def _check_windows(windows: tf.data.Dataset, path: tf.Tensor, seq_len: int, training: bool) -> tf.data.Dataset:
    """Fails, naming the file, unless the parsed windows are consecutive frames
    ``1..num_frames`` of one recording. The last window must be an empty sentinel,
    where the end of the file is checked. In evaluation a window shorter than ``seq_len``
    is checked as it passes, since a consumer that stops at the expected number of batches
    never pulls the sentinel: it must end the recording."""

    def step(state, w):
        expected, num_frames = state
        n = tf.shape(w["frame"], out_type=tf.int64)[0]
        is_end = tf.equal(n, 0)
        consecutive = tf.logical_and(
            tf.reduce_all(tf.equal(w["frame"], expected + tf.range(n, dtype=tf.int64))),
            tf.reduce_all(tf.equal(w["recording_ids"], w["recording_id"])))
        num_frames = tf.where(is_end, num_frames, w["num_frames"])
        last = tf.where(is_end, expected - 1, expected + n - 1)  # the last frame read so far
        ends = tf.logical_or(is_end, tf.logical_and(not training, n < seq_len))  # where the recording must end
        complete = tf.logical_or(tf.logical_not(ends), tf.logical_and(num_frames > 0, tf.equal(last, num_frames)))
        checks = [
            tf.debugging.Assert(consecutive, [
                "TFRecord file", path, "does not hold consecutive frames of one recording: expected frame",
                expected, "and on, received", w["frame"][:8], "of recordings", w["recording_ids"][:8]]),
            tf.debugging.Assert(complete, [
                "TFRecord file", path, "is truncated or corrupt: its frames end at", last,
                "but the recording has", num_frames, "frames"]),
        ]
        with tf.control_dependencies(checks):
            return (expected + n, num_frames), w

    return windows.scan((tf.constant(1, tf.int64), tf.constant(-1, tf.int64)), step)


def _start_offset(records: tf.data.Dataset, draw: tf.Tensor, seq_len: int) -> tf.Tensor:
    """The training start offset of a shard from the random int64 ``draw``: uniform in
    ``[0, min(seq_len, N − seq_len + 1))`` for a recording of N frames (read from its first
    record), so a recording of at least ``seq_len`` frames always yields a full window."""
    spec = {schema.NUM_FRAMES: tf.io.FixedLenFeature([], tf.int64)}
    n = records.take(1).reduce(tf.constant(0, tf.int64),
                               lambda _, s: tf.io.parse_single_example(s, spec)[schema.NUM_FRAMES])
    return tf.math.floormod(draw, tf.clip_by_value(n - seq_len + 1, 1, seq_len))


def _file_windows(path: tf.Tensor, draw: tf.Tensor, inputs: InputConfig, cfg: ReaderConfig,
                  training: bool) -> tf.data.Dataset:
    """Windows of one shard, parsed and checked: in training a head of a random number of
    frames (``_start_offset`` of ``draw``), then ``seq_len`` frames at a time, full windows
    only; in evaluation every frame from the first, the last window shorter.

    Corrupt records end the file early (``ignore_errors``) so that the end check
    fails naming the file; TF's own DataLossError does not name it.
    """
    records = tf.data.TFRecordDataset(path).ignore_errors()
    offset = _start_offset(records, draw, cfg.seq_len) if training else tf.constant(0, tf.int64)
    windows = (records.take(offset).batch(cfg.seq_len)
               .concatenate(records.skip(offset).batch(cfg.seq_len))
               .concatenate(tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))))
    checked = _check_windows(windows.map(lambda s: parse_window(s, inputs)), path, cfg.seq_len, training)
    min_len = cfg.seq_len if training else 1
    return checked.filter(lambda w: tf.shape(w["frame"])[0] >= min_len)


def _fail_if_empty(windows: tf.data.Dataset, message: str) -> tf.data.Dataset:
    """``windows`` unchanged, but an error with ``message`` at its end if it yielded nothing:
    a repeated pipeline whose passes are all empty would otherwise be waited on forever."""
    def empty_like(spec):
        shape = [0 if d is None else d for d in spec.shape.as_list()]
        return tf.zeros(shape, spec.dtype) if spec.dtype != tf.string else tf.fill(shape, "")

    sentinel = tf.nest.map_structure(empty_like, windows.element_spec)
    flagged = windows.map(lambda w: (w, False)).concatenate(tf.data.Dataset.from_tensors((sentinel, True)))

    def step(count, item):
        _, is_end = item
        check = tf.debugging.Assert(tf.logical_or(tf.logical_not(is_end), count > 0), [message])
        with tf.control_dependencies([check]):
            return count + 1, item

    return flagged.scan(tf.constant(0, tf.int64), step).filter(lambda w, is_end: tf.logical_not(is_end)).map(
        lambda w, is_end: w)


def data_error(error: tf.errors.OpError) -> DataError | None:
    """The one-line DataError of a failed reader check inside a running pipeline (it names the
    shard and the frame), or None when ``error`` is not one. TF wraps the message of a failed
    ``tf.debugging.Assert`` in graph details; this keeps the sentence."""
    message = error.message or ""
    start = message.find(_ASSERT_PREFIX)
    if start < 0 or not any(mark in message for mark in _CHECK_MARKS):
        return None
    body = message[start + len(_ASSERT_PREFIX):].split("\n")[0].split(" [[")[0]
    parts = [p.strip() for p in re.findall(r"\[(.*?)\]", body) if p.strip()]
    return DataError(" ".join(parts).replace("b'", "").replace("'", ""))


def decode_face_jpeg(jpeg: tf.Tensor) -> tf.Tensor:
    """One face crop's JPEG string → ``(H, W, 3)`` uint8 RGB, as training and evaluation see it.

    TF's decoder with its default (fast integer) DCT: OpenCV's decoder (``faces.decode_jpeg``)
    uses the accurate DCT and gives other pixels, up to 16 levels apart at quality 95, so a
    client that wants the model to see its faces as in training decodes with this function."""
    return tf.io.decode_jpeg(jpeg, channels=3)


def decode_faces(jpegs: tf.Tensor, face_size: int) -> tf.Tensor:
    """JPEG strings ``(n,)`` → float32 faces ``(n, face_size, face_size, 3)`` in [0, 1]."""
    images = tf.map_fn(decode_face_jpeg, jpegs,
                       fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8))
    images = tf.ensure_shape(images, [None, face_size, face_size, 3])
    return tf.image.convert_image_dtype(images, tf.float32)


def augment_faces(faces: tf.Tensor, cfg: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """The training augmentation (docs/design.md §6) of one window ``(n, size, size, 3)`` in [0, 1].

    Resize to ``cfg.resize``, random crop back to ``size``, random saturation factor in
    ``[saturation_lower, saturation_upper)``, random brightness offset in ``±brightness_delta``,
    clip to [0, 1] (the order of ``tf.image``'s per-image ops, which this vectorises). The draws
    are made per frame or once per window (``cfg.per``). ``seed`` is a stateless ``(2,)`` int
    seed: the same seed gives the same faces.
    """
    n, size = tf.shape(faces)[0], faces.shape[1]
    draws = n if cfg.per == "frame" else 1
    seeds = tf.random.experimental.stateless_split(seed, 4)
    offsets = tf.random.stateless_uniform([draws, 2], seeds[0], maxval=cfg.resize - size + 1, dtype=tf.int32)
    saturation = tf.random.stateless_uniform([draws, 1, 1], seeds[1], cfg.saturation_lower, cfg.saturation_upper)
    brightness = tf.random.stateless_uniform([draws, 1, 1, 1], seeds[2], -cfg.brightness_delta,
                                             cfg.brightness_delta)
    offsets = tf.broadcast_to(offsets, [n, 2])
    x = tf.image.resize(faces, [cfg.resize, cfg.resize])
    pixels = tf.range(size)
    x = tf.gather(x, offsets[:, :1] + pixels, axis=1, batch_dims=1)  # rows of each frame's crop
    x = tf.gather(x, offsets[:, 1:] + pixels, axis=2, batch_dims=1)  # then its columns
    hsv = tf.image.rgb_to_hsv(x)
    hue, sat, value = tf.unstack(hsv, axis=-1)
    x = tf.image.hsv_to_rgb(tf.stack([hue, tf.clip_by_value(sat * saturation, 0.0, 1.0), value], axis=-1))
    return tf.clip_by_value(x + brightness, 0.0, 1.0)


def finish_window(w: dict, inputs: InputConfig, cfg: ReaderConfig, training: bool,
                  seed: tf.Tensor | None = None) -> dict:
    """Parsed window → model-ready window padded to ``seq_len`` with a mask."""
    n = tf.shape(w["frame"])[0]
    pad = cfg.seq_len - n
    out = {"frame": w["frame"], "mask": tf.ones([n], tf.float32), "recording_id": w["recording_id"]}
    if "audio" in w:
        out["audio"] = w["audio"]
    if "face_jpeg" in w:
        faces = decode_faces(w["face_jpeg"], inputs.face_size)
        if training and cfg.augment is not None:
            faces = augment_faces(faces, cfg.augment, seed)
        out["face"] = faces
        out["face_found"] = w["face_found"]
    if "labels" in w:
        out["labels"] = w["labels"]
    for key, value in out.items():
        if key != "recording_id":
            padded = tf.pad(value, [[0, pad]] + [[0, 0]] * (value.shape.rank - 1))
            out[key] = tf.ensure_shape(padded, [cfg.seq_len] + value.shape[1:].as_list())
    return out


def make_dataset(file_pattern: str | Sequence[str], inputs: InputConfig, cfg: ReaderConfig, *, training: bool,
                 input_context: tf.distribute.InputContext | None = None, repeat: bool = False,
                 seed: int | None = None) -> tf.data.Dataset:
    """Windows of ``cfg.seq_len`` frames, holding what ``inputs`` names, from the shards
    matching ``file_pattern``.

    Training: random start offset per recording and pass, full windows only,
    shuffled, face augmentation, incomplete batches dropped. Evaluation: every
    frame of every recording exactly once and in order, the last window of a
    recording padded (``mask`` 0), recordings in file order.

    With ``input_context`` the shards are split by input pipeline id and each
    pipeline batches ``cfg.batch_size`` split over the replicas in sync.
    """
    if ("face" in inputs.modalities and training and cfg.augment is not None
            and cfg.augment.resize < inputs.face_size):
        raise ValueError(f"augment.resize ({cfg.augment.resize}) must be >= face_size ({inputs.face_size})")
    files = list_shards(file_pattern)
    batch_size = cfg.batch_size
    if input_context is not None:
        files = pipeline_shards(files, input_context, file_pattern)
        batch_size = input_context.get_per_replica_batch_size(cfg.batch_size)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:  # one pass over the files: shuffled, each with a random draw for its start offset
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True))
    else:
        ds = ds.map(lambda f: (f, tf.constant(0, tf.int64)))
    ds = ds.interleave(lambda f, draw: _file_windows(f, draw, inputs, cfg, training),
                       cycle_length=cfg.cycle_length if training else 1,
                       num_parallel_calls=AUTOTUNE)  # deterministic: a run is a function of its seed
    if training:
        ds = _fail_if_empty(ds, f"no training window of seq_len={cfg.seq_len} frames can be cut: every recording "
                                f"of the {len(files)} shard(s) matching {file_pattern} is shorter")
    if repeat:  # every pass is checked, reshuffled and draws new offsets
        ds = ds.repeat()
    if training:
        ds = ds.shuffle(cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda w, s: finish_window(w, inputs, cfg, True, s),
                                                num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda w: finish_window(w, inputs, cfg, False), num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training)
    return ds.prefetch(AUTOTUNE)
