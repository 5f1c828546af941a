"""The three corpus sources: the AVEC 2016 / RECOLA layout, a manifest CSV, the demo generator.

Each turns a corpus on disk (or a seed) into ``Recording`` objects for
``convert.convert``; nothing is decoded until a recording is opened.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd

from emotion_e2e.config import MODALITIES, STREAM_KIND
from emotion_e2e.data import demo, faces, labels, media, names
from emotion_e2e.data.convert import ConvertConfig, Frame, Recording
from emotion_e2e.errors import ConfigError, DataError

RECOLA_PARTITIONS = ("train", "dev", "test")
RECOLA_LABELLED = ("train", "dev")  # AVEC withholds the test labels
RECOLA_DIMENSIONS = ("arousal", "valence")
_RECOLA_ID = re.compile(r"(?P<partition>train|dev|test)_\d+")  # fullmatch: '$' would let a trailing '\n' in
MANIFEST_COLUMNS = ("recording_id", "partition", "audio", "video", "labels")
# A label track this many times longer than its media, whose time steps are whole multiples of the
# frame step in milliseconds, gets a hint that its times look like milliseconds (1000× too long).
MILLISECONDS_HINT_RATIO = 100


@functools.lru_cache(maxsize=None)
def detector(face_cfg) -> faces.FaceDetector:
    """The detector of ``face_cfg``, one per process: the cascade or model is loaded once."""
    return faces.make_detector(face_cfg)


@dataclasses.dataclass(frozen=True)
class MediaRecording(Recording):
    """A recording from media files, labelled by ARFF files (one per dimension) or a CSV.

    ``audio`` may name the video file itself: its audio track is then used.
    """

    audio: str | None = None
    video: str | None = None
    arff_labels: tuple[tuple[str, str], ...] = ()
    csv_labels: str | None = None

    def _labels(self, cfg):
        if self.arff_labels:
            return labels.arff_labels(dict(self.arff_labels), cfg.time_base, self.recording_id)
        if self.csv_labels:
            return labels.csv_labels(self.csv_labels, cfg.time_base, self.recording_id)
        return None

    def open(self, cfg: ConvertConfig):
        n, track = self.frame_count(cfg)
        return n, (track.names if track else ()), self.frames(cfg, n, track)

    @property
    def files(self) -> dict[str, str | None]:
        """The file each kind of stream is read from: ``{"audio": ..., "video": ...}``."""
        return {"audio": self.audio, "video": self.video}

    def media_lengths(self, cfg: ConvertConfig) -> dict[str, int]:
        """``{"audio": frames, "video": frames}``: the length of each stream ``cfg.modalities``
        needs, in frames; DataError when a needed file is not given."""
        lengths = {}
        for modality in (m for m in MODALITIES if m in cfg.modalities):
            kind = STREAM_KIND[modality]
            path = self.files[kind]
            if not path:
                raise DataError(f"recording {self.recording_id}: modality {modality!r} needs a {kind} file "
                                f"(modalities {list(cfg.modalities)}) but none was given")
            duration = media.audio_duration(path) if kind == "audio" else media.video_duration(path)
            lengths[kind] = cfg.time_base.frames_in(duration)
        return lengths

    def frame_count(self, cfg: ConvertConfig, media_lengths: dict[str, int] | None = None):
        """``(frames, label track or None)``: the shortest of the media and labels ``cfg`` needs,
        in frames (``media_lengths`` when already measured); DataError when their lengths differ
        by more than ``cfg.max_length_mismatch``."""
        track = self._labels(cfg)
        lengths = {f"{kind} ({self.files[kind]})": frames
                   for kind, frames in (self.media_lengths(cfg) if media_lengths is None else media_lengths).items()}
        if track is not None:
            lengths["labels"] = track.num_frames
        if max(lengths.values()) - min(lengths.values()) > cfg.max_length_mismatch:
            raise DataError(f"recording {self.recording_id}: lengths in frames differ by more than "
                            f"{cfg.max_length_mismatch}: {lengths}{_milliseconds_hint(track, lengths, cfg.time_base)}")
        return min(lengths.values()), track

    def video_frames(self, cfg: ConvertConfig, n: int):
        """``(open_frames, source)``: ``open_frames()`` decodes the video's ``n`` RGB frames on
        ``cfg``'s grid (each call a new decoding); ``source`` names the video in errors."""
        return (lambda: media.video_frames(self.video, cfg.time_base, n),
                f"video {self.video} (recording {self.recording_id})")

    def frames(self, cfg: ConvertConfig, n: int, track=None) -> Iterator[Frame]:
        """The recording's ``n`` frames on ``cfg``'s grid (``track``'s labels in them when given)."""
        tb = cfg.time_base
        audio = (media.audio_frames(self.audio, tb, n) if "audio" in cfg.modalities
                 else itertools.repeat(None))
        face_crops = None
        if "face" in cfg.modalities:
            open_frames, source = self.video_frames(cfg, n)
            crops = face_crops = faces.face_crops(open_frames, detector(cfg.face), cfg.face, source=source)
        else:
            crops = itertools.repeat((None, False))
        for i, (a, (crop, found)) in enumerate(zip(audio, crops)):
            jpeg = None if crop is None else faces.encode_jpeg(crop, cfg.face.jpeg_quality)
            yield Frame(a, jpeg, found, None if track is None else track.values[i],
                        None if face_crops is None else len(face_crops.tracking.tracks),
                        None if face_crops is None else face_crops.main.box(i + 1))


def _milliseconds_hint(track, lengths: dict[str, int], time_base) -> str:
    """A hint for the length error when the label times look like milliseconds: the track is
    ``MILLISECONDS_HINT_RATIO`` times longer than the media and steps by whole multiples of the
    frame step in milliseconds; else ''."""
    media_frames = [n for kind, n in lengths.items() if kind != "labels"]
    if track is None or not track.steps_in_milliseconds or not media_frames \
            or track.num_frames <= MILLISECONDS_HINT_RATIO * max(media_frames):
        return ""
    ms = time_base.frame_step * labels.MILLISECONDS_PER_SECOND
    return (f"; the label times step by whole multiples of {ms:g} and look like milliseconds: "
            f"they must be seconds")


def recola_recordings(root: str, partitions=RECOLA_PARTITIONS, dimensions=RECOLA_DIMENSIONS):
    """The AVEC 2016 package layout (docs/design.md §4); the partition is the file-name prefix.

    The audio comes from ``recordings_audio/ID.wav`` or, when that is missing,
    from the track of ``recordings_video/ID.mp4``.
    """
    for d in dimensions:  # each is a folder to read: nothing outside ratings_gold_standard/
        names.check_partition(d, f"{root}: ratings_gold_standard/", ConfigError, kind="label dimension")
    audio_dir, video_dir = os.path.join(root, "recordings_audio"), os.path.join(root, "recordings_video")
    if not os.path.isdir(audio_dir) and not os.path.isdir(video_dir):
        raise DataError(f"{root} is not an AVEC 2016 package: neither recordings_audio/ nor "
                        f"recordings_video/ exists")
    ids = set()
    for folder, ext in ((audio_dir, ".wav"), (video_dir, ".mp4")):
        if os.path.isdir(folder):
            ids |= {f[: -len(ext)] for f in os.listdir(folder)
                    if f.endswith(ext) and _RECOLA_ID.fullmatch(f[: -len(ext)])}
    out = []
    for rid in sorted(ids):
        partition = _RECOLA_ID.fullmatch(rid)["partition"]
        if partition not in partitions:
            continue
        wav, mp4 = os.path.join(audio_dir, rid + ".wav"), os.path.join(video_dir, rid + ".mp4")
        video = mp4 if os.path.exists(mp4) else None
        gold = ()
        if partition in RECOLA_LABELLED:
            gold = tuple((d, os.path.join(root, "ratings_gold_standard", d, rid + ".arff")) for d in dimensions)
            missing = [p for _, p in gold if not os.path.exists(p)]
            if missing:
                raise DataError(f"recording {rid}: gold-standard file(s) missing: {missing}")
        out.append(MediaRecording(rid, partition, audio=wav if os.path.exists(wav) else video,
                                  video=video, arff_labels=gold))
    if not out:
        raise DataError(f"{root}: no recordings named {{{','.join(partitions)}}}_N found")
    return out


def manifest_recordings(path: str, partitions=None):
    """Rows ``recording_id, partition, audio, video, labels`` of a manifest CSV.

    Relative paths are relative to the manifest's folder. An empty ``audio``
    takes the video's own track; an empty ``labels`` marks an unlabelled recording.
    Recording ids and partitions must be names (``names``): DataError naming the line and column.
    """
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from e
    table.columns = [c.strip() for c in table.columns]
    if list(table.columns) != list(MANIFEST_COLUMNS):
        raise DataError(f"manifest {path}: expected columns {list(MANIFEST_COLUMNS)}, "
                        f"received {list(table.columns)}")
    base = os.path.dirname(os.path.abspath(path))

    def resolve(p):
        p = p.strip()
        return os.path.normpath(os.path.join(base, p)) if p else None

    out = []
    for row_number, row in enumerate(table.itertuples(index=False), start=2):
        where = f"manifest {path}, line {row_number}, column"
        rid = names.check_recording_id(row.recording_id.strip(), f"{where} recording_id")
        partition = names.check_partition(row.partition.strip(), f"{where} partition")
        if partitions and partition not in partitions:
            continue
        audio, video = resolve(row.audio), resolve(row.video)
        if not audio and not video:
            raise DataError(f"manifest {path}, line {row_number} (recording {rid}): neither audio nor video given")
        out.append(MediaRecording(rid, partition, audio=audio or video, video=video,
                                  csv_labels=resolve(row.labels)))
    if not out:
        raise DataError(f"manifest {path}: no recordings" + (f" in partitions {list(partitions)}" if partitions else ""))
    return out


@dataclasses.dataclass(frozen=True)
class DemoSourceRecording(Recording):
    """A recording of the synthetic demo corpus (already a face crop: every face is found)."""

    config: demo.DemoConfig = None
    spec: demo.DemoRecording = None

    def open(self, cfg: ConvertConfig):
        frames = demo.frames(self.spec, self.config, cfg.time_base, cfg.face, modalities=cfg.modalities)
        n = cfg.time_base.frames_in(self.config.seconds)
        return n, demo.LABEL_NAMES, (
            Frame(f.audio, None if f.face is None else faces.encode_jpeg(f.face, cfg.face.jpeg_quality),
                  f.face_found, np.array([f.labels[k] for k in demo.LABEL_NAMES], np.float32))
            for f in frames)


def demo_recordings(config: "demo.DemoConfig", partitions=None):
    return [DemoSourceRecording(r.recording_id, r.partition, config=config, spec=r)
            for r in demo.demo_recordings(config) if not partitions or r.partition in partitions]
