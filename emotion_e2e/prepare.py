r"""Converts a corpus into sharded TFRecords.

  python -m emotion_e2e.prepare --source=demo --output_dir=tfrecords/demo
  python -m emotion_e2e.prepare --source=recola --input=/data/AVEC2016 --workers=2
  python -m emotion_e2e.prepare --source=manifest --input=corpus.csv --modalities=audio
  python -m emotion_e2e.prepare --source=demo --runner=beam \
      --beam_options=--runner=DirectRunner,--direct_num_workers=2

Writes, per partition, ``{partition}-{i:05d}-of-{n:05d}.tfrecord`` (one shard
per recording) and, last, ``metadata.json``; partitions already in the output
directory that are not converted are kept. ``--runner=beam`` converts the
recordings as an Apache Beam pipeline (the ``beam`` extra) run by the runner
``--beam_options`` names; its workers write the shards into ``--output_dir``
themselves, so a remote runner needs a folder mounted at the same path on every
worker and here (``gs://`` is not supported: the commit renames with ``os``).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from emotion_e2e.config import FACE_ALIGNMENTS, FACE_DETECTORS, FaceConfig, TimeBase, TrackConfig
from emotion_e2e.data import convert, demo, metadata, sources
from emotion_e2e.errors import ConfigError, DataError

# Every default and choice comes from the configuration dataclasses.
_CONVERT = convert.ConvertConfig()
_TIME_BASE, _FACE, _TRACK, _DEMO = TimeBase(), FaceConfig(), TrackConfig(), demo.DemoConfig()
SOURCES = ("demo", "recola", "manifest")

_SOURCE = flags.DEFINE_enum("source", None, list(SOURCES), "The corpus kind.")
_INPUT = flags.DEFINE_string("input", None, "recola: the AVEC 2016 package folder; manifest: the manifest CSV.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where shards go. Default: tfrecords/{source}.")
_PARTITIONS = flags.DEFINE_list("partitions", [], "Partitions to convert (default: all); the others "
                                "already in --output_dir are kept.")
_MODALITIES = flags.DEFINE_list("modalities", list(_CONVERT.modalities),
                                "Modalities to write: audio (the waveform), face (crops from the video).")
_WORKERS = flags.DEFINE_integer("workers", 1, "--runner=local: processes converting recordings in parallel.")
RUNNERS = ("local", "beam")
_RUNNER = flags.DEFINE_enum("runner", "local", list(RUNNERS),
                            "local: convert in this process or --workers processes; beam: as an Apache Beam "
                            "pipeline (the beam extra) run by the runner --beam_options names.")
_BEAM_OPTIONS = flags.DEFINE_list(
    "beam_options", [], "--runner=beam: Beam pipeline options, e.g. --runner=DirectRunner,--direct_num_workers=2 "
    "(default: the DirectRunner). A remote runner's workers must be able to write --output_dir at the same path.")
_DIMENSIONS = flags.DEFINE_list("recola_dimensions", list(sources.RECOLA_DIMENSIONS),
                                "recola: gold-standard folders to read, one label dimension each.")
_MISMATCH = flags.DEFINE_integer("max_length_mismatch", _CONVERT.max_length_mismatch,
                                 "Frames by which labels and media may differ (then trimmed to the shorter).")
# Time base and face crops (docs/design.md §2, §3).
_FRAME_STEP = flags.DEFINE_float("frame_step", _TIME_BASE.frame_step, "Seconds per frame.")
_SAMPLE_RATE = flags.DEFINE_integer("sample_rate", _TIME_BASE.sample_rate, "Audio sample rate in Hz.")
_FACE_SIZE = flags.DEFINE_integer("face_size", _FACE.size, "Side of the square face crop in pixels.")
_FACE_MARGIN = flags.DEFINE_float("face_margin", _FACE.margin, "Crop side = (1 + margin) × the face box's longer side.")
_JPEG_QUALITY = flags.DEFINE_integer("jpeg_quality", _FACE.jpeg_quality, "JPEG quality of the stored crops (90-100).")
_DETECTOR = flags.DEFINE_enum("face_detector", _FACE.detector, list(FACE_DETECTORS),
                              "yunet: OpenCV Zoo's YuNet (its model inside this package); haar: OpenCV's "
                              "bundled cascade; mediapipe: MediaPipe's full-range model (needs the mediapipe "
                              "extra).")
_ALIGN = flags.DEFINE_enum("face_align", _FACE.align, list(FACE_ALIGNMENTS),
                           "none: the square is cut upright; eyes: turned about the face box's centre so that "
                           "the detector's eyes lie level (yunet or mediapipe; haar gives no eyes).")
_DETECT_MAX_SIDE = flags.DEFINE_integer(
    "detect_max_side", _FACE.detect_max_side,
    "Frames are downscaled to this longer side for detection; below 640 Haar misses faces of 1/10 of a 720p "
    "frame's height.")
_DETECT_EVERY = flags.DEFINE_integer(
    "detect_every", _TRACK.detect_every,
    "Face tracks: the whole frame is searched every this many frames, the frames between only around each "
    "tracked face (1: the whole frame every frame).")
_TRACK_MAX_GAP = flags.DEFINE_integer(
    "track_max_gap", _TRACK.max_gap,
    "Face tracks: frames a face may go undetected and keep its track; one away longer is another person.")
# Demo corpus size.
_SEED = flags.DEFINE_integer("seed", _DEMO.seed, "demo: random seed; the corpus is a function of it.")
_DEMO_TRAIN = flags.DEFINE_integer("demo_train", _DEMO.num_train, "demo: training recordings.")
_DEMO_DEV = flags.DEFINE_integer("demo_dev", _DEMO.num_dev, "demo: dev recordings (unseen identities).")
_DEMO_SECONDS = flags.DEFINE_float("demo_seconds", _DEMO.seconds, "demo: seconds per recording.")

flags.mark_flag_as_required("source")


def _recordings(partitions):
    source = _SOURCE.value
    if source == "demo":
        cfg = demo.DemoConfig(seed=_SEED.value, num_train=_DEMO_TRAIN.value, num_dev=_DEMO_DEV.value,
                              seconds=_DEMO_SECONDS.value)
        return sources.demo_recordings(cfg, partitions)
    if not _INPUT.value:
        raise app.UsageError(f"--source={source} needs --input (received none)")
    if source == "recola":
        return sources.recola_recordings(_INPUT.value, partitions or sources.RECOLA_PARTITIONS,
                                         tuple(_DIMENSIONS.value))
    return sources.manifest_recordings(_INPUT.value, partitions)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        cfg = convert.ConvertConfig(
            time_base=TimeBase(frame_step=_FRAME_STEP.value, sample_rate=_SAMPLE_RATE.value),
            face=FaceConfig(size=_FACE_SIZE.value, margin=_FACE_MARGIN.value, jpeg_quality=_JPEG_QUALITY.value,
                            detector=_DETECTOR.value, detect_max_side=_DETECT_MAX_SIDE.value, align=_ALIGN.value,
                            track=TrackConfig(detect_every=_DETECT_EVERY.value, max_gap=_TRACK_MAX_GAP.value)),
            modalities=tuple(_MODALITIES.value), max_length_mismatch=_MISMATCH.value)
    except ValueError as e:  # a flag out of range or --face_align=eyes with haar: the config's message says so
        sys.exit(f"error: {e}")
    beam_options = None
    if _RUNNER.value == "beam":
        if flags.FLAGS["workers"].present:
            raise app.UsageError("--workers is for --runner=local; give Beam's own options in --beam_options "
                                 f"(e.g. --direct_num_workers=2). Received: --workers={_WORKERS.value}")
        try:
            convert.import_beam()
        except ImportError as e:
            sys.exit(f"error: {e}")
        beam_options = _BEAM_OPTIONS.value
    elif _BEAM_OPTIONS.value:
        raise app.UsageError(f"--beam_options needs --runner=beam. Received: --beam_options={_BEAM_OPTIONS.value}")
    output_dir = _OUTPUT_DIR.value or os.path.join("tfrecords", _SOURCE.value)
    try:
        meta = convert.convert(_recordings(tuple(_PARTITIONS.value)), cfg, output_dir,
                               workers=_WORKERS.value, beam_options=beam_options, source=_SOURCE.value)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")
    for name, p in meta["partitions"].items():
        print(f"{name}: {p['num_recordings']} recordings, {p['num_frames']} frames -> "
              f"{os.path.join(output_dir, name)}-*.tfrecord")
    print(f"metadata: {metadata.path(output_dir)}")


if __name__ == "__main__":
    app.run(main)
