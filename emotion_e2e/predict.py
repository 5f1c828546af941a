r"""Predicts arousal and valence every 40 ms for any media file with a trained model.

  python -m emotion_e2e.predict --model=models/emotion --input=talk.mp4 --output_dir=predictions --plot
  python -m emotion_e2e.predict --model=runs/demo_audio --input=a.wav --input=b.mp4 --output_dir=predictions
  python -m emotion_e2e.predict --model=models/emotion --input=clips --input='a/**/*.mov' --output_dir=out --keep_going

``--model`` is an export folder (``python -m emotion_e2e.export``: the highest version in it, or
one version folder) or a training run directory (its checkpoint turned into the same graph in
memory; nothing is written). Each input is any video (with or without an audio track, any frame
rate, variable rate) or audio file; it is read by the converter's own code
(``sources.MediaRecording.open``: the same decoding, resampling, frame grid, face detection,
face tracks (the main track's crops), hold and JPEG round trip as the training data, the JPEG
decoded by the training reader's decoder) with the time base and face crop settings the model was trained with, and fed to the
model's ``stream`` signature in chunks of ``--chunk_seconds``, the LSTM state carried from one
chunk to the next. Memory does not grow with the file's length: at most one chunk of frames is
alive.

Writes ``OUTPUT_DIR/<input file stem>.csv``: ``time`` (the end of frame i, frame_step·i),
one column per label dimension and, for a model that uses faces, ``face_found`` (1 when a face
was detected in the frame, 0 when the last box was held) and the box ``x, y, w, h`` the face was
cut from; with ``--plot`` also ``OUTPUT_DIR/<stem>.png``; with ``--render`` also
``OUTPUT_DIR/<stem>.mp4``, the input with the face boxes and the predictions drawn on it
(``emotion_e2e.render``). Any stem is kept as it is, but one that is empty or starts with '.'
is refused before any work: its outputs would be hidden files. A folder or a glob given as
``--input`` gives its media files, found by content, their outputs under their path in it
(``predict_inputs``); ``OUTPUT_DIR/summary.csv`` has a row per input (``predict_summary``), and
with ``--keep_going`` a file that fails is a row with its error instead of the end of the run.

``--faces=all`` predicts every face track of the file instead of the main one, each with its own
LSTM state and the same (the room's) audio: the CSV gets a ``track`` column (rows sorted by
track, then time, over each track's life), the track's box ``x, y, w, h`` and the detector's
``confidence``. In Python::

    from emotion_e2e.predict import predict_file
    table = predict_file("models/emotion", "talk.mp4")   # pandas DataFrame indexed by time
    people = predict_file("models/emotion", "talk.mp4", faces="all")   # indexed by (track, time)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import sys
import time

import numpy as np

from emotion_e2e import config as config_lib
from emotion_e2e import export, live, predict_inputs, quadrants, render
from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import FACE_DETECTORS, STREAM_KIND, FaceConfig, TimeBase
from emotion_e2e.data import media
from emotion_e2e.data.convert import ConvertConfig
from emotion_e2e.errors import ConfigError, DataError

DEFAULT_CHUNK_SECONDS = 2.0  # benchmark: ResNet-50 at 10 s chunks peaks 330 MB higher for 4 % more frames/s
# The longest chunk: the model holds a chunk's activations at once, so memory grows linearly with it
# (ResNet-50: 330 MB more at 10 s than at 2 s, about 2.4 GB more at a minute) while speed stops
# growing after a few seconds; a minute is already more than any machine gains from, and a value
# like 1e300 is a mistake to refuse rather than a chunk of the whole file.
MAX_CHUNK_SECONDS = 60.0
# Seconds by which a video's audio track and picture may differ by default (both are cut to the
# shorter): what real containers hold. AAC's priming and padding, in a file muxed without an edit
# list, make the audio a few frames longer than the picture (3 frames, 120 ms, is common); the
# converter's one frame is for labelled data, which has to line up with its labels.
MAX_LENGTH_MISMATCH_SECONDS = 0.5
# The recording a file is read as; nothing is converted. A constant id: the file's own name may be
# anything ('my talk (1).mp4'), and the errors name the file itself.
PARTITION, RECORDING_ID = "predict", "input"
TIME = "time"
FACE_FOUND = "face_found"
# --faces: "main" predicts the converter's main track (the person the training data keeps), "all"
# every face track of the file, each with its own LSTM state.
MAIN, ALL = "main", "all"
FACES = (MAIN, ALL)
TRACK = "track"
BOX = ("x", "y", "w", "h")  # the track's box in the frame as displayed, pixels
CONFIDENCE = "confidence"  # the detector's score; empty (NaN) for Haar and where not found
QUADRANT = "quadrant"  # with neutral_band: the frame's quadrant of the valence-arousal plane
LABEL_FORMAT = "%.6g"  # the predictions in the CSV; float32 carries about 7 digits
TIME_DECIMALS = 9  # times are frame_step·i rounded to this, so 0.04·3 is 0.12, not 0.12000000000000001
NEEDS = {"audio": "its sound", "face": "faces from a video"}


class Predictor:
    """A trained model's ``stream`` signature and its description.

    ``description`` is the export's ``emotion_e2e.json`` (``export.describe``): time base, face
    crop settings, modalities, label names, state names and both signatures' inputs and outputs.
    ``stream(inputs, state)`` runs one chunk. Build one with ``Predictor.load``.
    """

    def __init__(self, call, description: dict, source: str, keep=None):
        self._call = call  # {name: tf.Tensor} -> {name: tf.Tensor}, the stream signature
        self._keep = keep  # what owns the variables the signature reads (the loaded SavedModel)
        self.description = description
        self.source = source

    @classmethod
    def load(cls, path: str, checkpoint: str = "best") -> Predictor:
        """The model in ``path``: an export folder (its highest version), one version folder, or a
        training run directory (``checkpoint`` 'best' or 'last' of it). ConfigError when
        ``path`` is none of these."""
        if not os.path.isdir(path):
            raise ConfigError(f"model {path} {'is not a folder' if os.path.exists(path) else 'not found'} "
                              f"(expected an export folder, a version folder or a training run directory)")
        if os.path.isfile(run_lib.config_path(path)):
            return cls.from_run(path, checkpoint)
        if os.path.isfile(os.path.join(path, "saved_model.pb")):
            return cls.from_saved_model(path)
        versions = export.versions(path)
        if versions:
            return cls.from_saved_model(os.path.join(path, str(versions[-1])))
        raise ConfigError(f"model {path} is neither a training run directory ({run_lib.CONFIG}), a SavedModel "
                          f"(saved_model.pb) nor an export folder with numbered versions; found: "
                          f"{sorted(os.listdir(path))[:10]}")

    @classmethod
    def from_saved_model(cls, version_dir: str) -> Predictor:
        """The ``stream`` signature of one exported version and its ``emotion_e2e.json``."""
        import tensorflow as tf  # noqa: PLC0415

        path = os.path.join(version_dir, export.ASSETS_EXTRA, export.DESCRIPTION_FILE)
        try:
            with open(path) as f:
                description = json.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"{version_dir} has no {export.ASSETS_EXTRA}/{export.DESCRIPTION_FILE}: "
                              f"not exported by emotion_e2e.export") from e
        except ValueError as e:
            raise DataError(f"{path} is not valid JSON: {e}") from e
        if "face" not in description:  # format 1 did not record the crop settings
            size = description["face_size"]
            description["face"] = dataclasses.asdict(FaceConfig(size=size))
            description["face_source"] = (f"{path} (format {description.get('format_version')}) has no face crop "
                                          f"settings: FaceConfig's defaults with its {size}-pixel face size")
            if "face" in description["modalities"]:
                print(f"warning: {description['face_source']}", file=sys.stderr)
        if "labels" not in description:  # before format 3
            description["labels"] = None
            description["labels_source"] = (f"{path} (format {description.get('format_version')}) has no label "
                                            f"statistics")
        try:
            model = tf.saved_model.load(version_dir)
        except Exception as e:  # noqa: BLE001 - TF raises OSError, ValueError or its own errors
            raise DataError(f"{version_dir} is not a readable SavedModel: {type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}") from e
        if export.STREAM_SIGNATURE not in model.signatures:
            raise ConfigError(f"{version_dir} has no {export.STREAM_SIGNATURE!r} signature; "
                              f"signatures: {sorted(model.signatures)}")
        signature = model.signatures[export.STREAM_SIGNATURE]
        return cls(lambda x: signature(**x), description, version_dir, keep=model)

    @classmethod
    def from_run(cls, run_dir: str, checkpoint: str = "best") -> Predictor:
        """A training run's checkpoint as the graph its export would hold (``export.serving_functions``:
        optimized for inference, the LSTMs' state exposed), built in memory."""
        import tensorflow as tf  # noqa: PLC0415

        cfg = run_lib.load_config(run_dir)
        run_lib.checkpoint_path(run_dir, checkpoint)  # ValueError for a name other than best/last
        export.check_names(cfg)
        description = export.run_description(cfg, run_dir, checkpoint)
        model = run_lib.load_checkpoint(run_dir, checkpoint)
        stream = tf.function(export.serving_functions(model, cfg)[export.STREAM_SIGNATURE],
                             input_signature=[export.tensor_specs(cfg, export.STREAM_SIGNATURE)])
        return cls(stream, description, run_dir, keep=model)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.description["modalities"])

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.description["label_names"])

    @property
    def time_base(self) -> TimeBase:
        return TimeBase(frame_step=self.description["frame_step"], sample_rate=self.description["sample_rate"])

    @property
    def face(self) -> FaceConfig:
        """The crop settings of the training data."""
        return config_lib.from_dict(FaceConfig, self.description["face"])

    def initial_state(self, batch: int = 1) -> dict[str, np.ndarray]:
        """Zeros for every state input: ``{name: (batch, units)}`` float32; empty without LSTMs."""
        inputs = self.description["signatures"][export.STREAM_SIGNATURE]["inputs"]
        return {n: np.zeros((batch, inputs[n]["shape"][-1]), inputs[n]["dtype"])
                for n in self.description["state_names"]}

    def stream(self, inputs: dict, state: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One chunk: ``inputs`` ``{modality: (batch, time, ...)}`` (audio float32, faces uint8 RGB)
        and the state the previous chunk returned (``initial_state`` to start) →
        ``({label: (batch, time) float32}, state after the chunk's last frame)``."""
        import tensorflow as tf  # noqa: PLC0415

        specs = self.description["signatures"][export.STREAM_SIGNATURE]["inputs"]
        y = self._call({n: tf.constant(v, dtype=specs[n]["dtype"]) for n, v in {**inputs, **state}.items()})
        return ({n: y[n].numpy() for n in self.label_names},
                {n: y[n].numpy() for n in self.description["state_names"]})

    def convert_config(self, face_detector: str | None = None, max_length_mismatch: int | None = None) -> ConvertConfig:
        """The converter's settings for the model's inputs: its time base, modalities and the
        training data's face crops (``face_detector`` replaces the detector), with
        ``max_length_mismatch`` frames (None: ``MAX_LENGTH_MISMATCH_SECONDS`` of them). ConfigError
        when the data's crops were aligned on the eyes and ``face_detector`` gives none."""
        if max_length_mismatch is None:
            max_length_mismatch = length_mismatch_frames(self.time_base)
        face = self.face
        if face_detector is not None:
            try:
                face = dataclasses.replace(face, detector=face_detector)
            except ValueError as e:
                raise ConfigError(f"--face_detector={face_detector}: the training data's face crops of "
                                  f"{self.source} were cut with align={face.align!r}: {e}") from None
        return ConvertConfig(time_base=self.time_base, face=face, modalities=self.modalities,
                             max_length_mismatch=max_length_mismatch)


def check_media(path: str, modalities) -> None:
    """DataError naming ``path`` when it is not a readable recording (a text file or a still image
    that FFmpeg would read as a picture, too) or lacks a stream the model's ``modalities`` need (an
    audio track for audio, a video for faces)."""
    fmt, kinds = media.probe(path)
    if not media.is_recording(fmt):
        raise DataError(f"{path} is not a recording: FFmpeg reads it with its {fmt!r} demuxer "
                        f"({'a text file shown as a picture' if fmt == 'tty' else 'a still image'})")
    for modality in modalities:
        kind = STREAM_KIND[modality]
        if kind not in kinds:
            have = ", ".join(kinds) or "none"
            raise DataError(f"{path} has no {kind} stream (it has: {have}), but the model needs {NEEDS[modality]} "
                            f"(modalities {list(modalities)})")


def length_mismatch_frames(time_base: TimeBase, seconds: float = MAX_LENGTH_MISMATCH_SECONDS) -> int:
    """The whole frames of ``time_base`` in ``seconds``: 12 of 40 ms in half a second."""
    return math.floor(seconds / time_base.frame_step + 1e-9)


def check_chunk_seconds(chunk_seconds: float):
    """ConfigError unless ``chunk_seconds`` is a number of seconds in (0, MAX_CHUNK_SECONDS]."""
    if not (isinstance(chunk_seconds, (int, float)) and 0 < chunk_seconds <= MAX_CHUNK_SECONDS):  # NaN fails too
        raise ConfigError(f"chunk_seconds must be a positive number of seconds, at most {MAX_CHUNK_SECONDS:g} "
                          f"(memory grows with the chunk, speed does not). Received: {chunk_seconds!r}")


def chunk_frames(chunk_seconds: float, time_base: TimeBase) -> int:
    """Frames per ``stream`` call: ``chunk_seconds`` of them, at least one."""
    check_chunk_seconds(chunk_seconds)
    return max(1, round(chunk_seconds / time_base.frame_step))


stem = predict_inputs.stem  # an input's output name; live and the benchmark name a source's CSV by it


def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm  # noqa: PLC0415

    show = enabled and not os.environ.get("CI") and sys.stderr.isatty()
    return tqdm(total=total, unit="frame", desc=desc, dynamic_ncols=True, disable=not show)


def model_inputs(modalities, audio, face_jpegs) -> dict[str, np.ndarray]:
    """``{modality: (1, time, ...)}`` of a chunk of frames, for the modalities the model uses:
    their ``audio`` samples, and their faces decoded from ``face_jpegs`` (the JPEG the converter
    writes) by the training reader's decoder, so the model sees the pixels it saw in training."""
    from emotion_e2e.data import reader  # noqa: PLC0415

    x = {}
    if "audio" in modalities:
        x["audio"] = np.stack(list(audio))[None]
    if "face" in modalities:
        x["face"] = np.stack([reader.decode_face_jpeg(j).numpy() for j in face_jpegs])[None]
    return x


def check_faces(faces: str, modalities=None) -> None:
    """ConfigError unless ``faces`` is one of ``FACES`` and, given the model's ``modalities``,
    "all" is asked of a model that uses faces."""
    if faces not in FACES:
        raise ConfigError(f"faces must be one of {list(FACES)}. Received: {faces!r}")
    if faces == ALL and modalities is not None and "face" not in modalities:
        raise ConfigError(f"faces={ALL!r} predicts one trace per face track, but the model uses no faces "
                          f"(modalities {list(modalities)}): there is nothing to track; use faces={MAIN!r}")


class _TrackTraces:
    """``predict_file(faces="all")``'s per-track outputs, filled chunk by chunk: per track a
    row per frame of its life (``first..last``) and the LSTM state it has reached."""

    def __init__(self, predictor: Predictor, tracks, cfg: ConvertConfig):
        self.predictor, self.tracks, self.cfg = predictor, tracks, cfg
        self.out = [{n: np.zeros(len(t.found), np.float32) for n in predictor.label_names} for t in tracks]
        self.states = {}  # track index -> state, while the track is alive

    def run(self, block, start: int, seconds: dict):
        """Runs every track alive in ``block``, the frames ``start..`` (1-based) as
        ``(audio or None, per track (crop or None, found))``: one ``stream`` call per track on
        its contiguous frames, from the state its previous call ended in."""
        from emotion_e2e.data import faces  # noqa: PLC0415

        end = start + len(block) - 1
        for k, t in enumerate(self.tracks):
            a, b = max(t.first, start), min(t.last, end)
            if a > b:
                continue
            t0 = time.perf_counter()
            rows = block[a - start:b - start + 1]
            x = model_inputs(self.predictor.modalities, [audio for audio, _ in rows],
                             [faces.encode_jpeg(crops[k][0], self.cfg.face.jpeg_quality) for _, crops in rows])
            t1 = time.perf_counter()
            y, state = self.predictor.stream(x, self.states.get(k) or self.predictor.initial_state())
            seconds["media"] += t1 - t0
            seconds["model"] += time.perf_counter() - t1
            self.states[k] = state
            if b == t.last:
                del self.states[k]
            for name in self.predictor.label_names:
                self.out[k][name][a - t.first:b - t.first + 1] = y[name][0]

    def table(self):
        """The DataFrame indexed by (track, time), rows sorted by track then time."""
        import pandas as pd  # noqa: PLC0415

        step = self.cfg.time_base.frame_step
        ids = np.concatenate([np.full(len(t.found), t.id) for t in self.tracks])
        frames = np.concatenate([np.arange(t.first, t.last + 1) for t in self.tracks])
        index = pd.MultiIndex.from_arrays([ids, np.round(step * frames, TIME_DECIMALS)], names=[TRACK, TIME])
        columns = {n: np.concatenate([o[n] for o in self.out]) for n in self.predictor.label_names}
        columns[FACE_FOUND] = np.concatenate([t.found for t in self.tracks]).astype(np.int8)
        boxes = np.concatenate([t.boxes for t in self.tracks])
        columns.update({c: boxes[:, j] for j, c in enumerate(BOX)})
        columns[CONFIDENCE] = np.concatenate([t.scores for t in self.tracks])
        return pd.DataFrame(columns, index=index)


def _advance(bar, frames: int, done: int, cfg: ConvertConfig, start: float):
    """Moves the progress ``bar`` on by ``frames`` and shows the real-time factor so far."""
    bar.update(frames)
    bar.set_postfix_str(f"{done * cfg.time_base.frame_step / (time.perf_counter() - start):.1f}× real time")


def _predict_tracks(predictor: Predictor, recording, path: str, cfg: ConvertConfig, n: int, chunk: int,
                    progress: bool, seconds: dict, start: float):
    """``predict_file(faces="all")``'s table, the file's frame count and its ``Tracking``: the faces tracked
    on a first decoding (boxes only, as the converter does), then every track's crops cut on a
    second one (``tracking.track_crops``) and run chunk by chunk with the track's own state."""
    from emotion_e2e.data import sources, tracking  # noqa: PLC0415

    t0 = time.perf_counter()
    open_frames, source = recording.video_frames(cfg, n)
    result = tracking.track_faces(open_frames, sources.detector(cfg.face), cfg.face, source)
    if not result.tracks:
        raise DataError(f"no face found in any of {result.num_frames} frames of {source}")
    seconds["media"] += time.perf_counter() - t0
    audio = (media.audio_frames(path, cfg.time_base, n) if "audio" in predictor.modalities
             else itertools.repeat(None))
    rows = zip(audio, tracking.track_crops(open_frames, result.tracks, n, cfg.face, source, life_only=True))
    traces, done = _TrackTraces(predictor, result.tracks, cfg), 0
    with _progress(n, stem(path), progress) as bar:
        while True:
            t0 = time.perf_counter()
            block = list(itertools.islice(rows, chunk))  # the only crops alive: live tracks' in one chunk
            seconds["media"] += time.perf_counter() - t0
            if not block:
                break
            traces.run(block, done + 1, seconds)
            done += len(block)
            _advance(bar, len(block), done, cfg, start)
    if done != n:
        raise DataError(f"{path}: the converter announced {n} frames but gave {done}")
    return traces.table(), n, result


def predict_file(model: str | Predictor, path: str, *, checkpoint: str = "best",
                 chunk_seconds: float = DEFAULT_CHUNK_SECONDS, face_detector: str | None = None,
                 max_length_mismatch: int | None = None, faces: str = MAIN, progress: bool = True,
                 neutral_band: float | None = None):
    """The model's predictions for every 40 ms frame of the media file ``path``.

    Args:
      model: a ``Predictor``, or the path ``Predictor.load`` takes (an export folder, a version
        folder or a training run directory, whose ``checkpoint`` is used).
      chunk_seconds: the frames of one ``stream`` call, in (0, MAX_CHUNK_SECONDS]; the LSTM state is
        carried between calls, so the result does not depend on it (up to fp32 rounding), memory
        and latency do.
      face_detector: one of ``FACE_DETECTORS`` instead of the detector the training data was cut with.
      max_length_mismatch: frames by which a video's audio track and its picture may differ
        (both are cut to the shorter); None: ``MAX_LENGTH_MISMATCH_SECONDS`` of them, 12 frames
        of 40 ms (the converter allows 1).
      faces: "main", the converter's main track (what training data made of the file holds), or
        "all", every face track of the file, each through the model with its own LSTM state and
        the same audio (the room's: nothing tells who speaks); ConfigError for "all" with a model
        that uses no faces.
      progress: a progress bar with the real-time factor on stderr, when it is a terminal (not in CI).
      neutral_band: when given, a ``quadrant`` column names each frame's quadrant of the
        valence-arousal plane, "neutral" within this band around 0 (``emotion_e2e.quadrants``);
        ConfigError for a model without arousal and valence.

    Returns:
      A pandas DataFrame indexed by ``time`` (seconds, the end of frame i: frame_step·i, one row
      per frame: the converter's frame count for the file), a float32 column per label
      dimension and, for a model that uses faces, ``face_found`` (0/1) and the main track's box
      ``x, y, w, h`` the face was cut from (pixels of the frame as displayed). ``attrs`` holds the
      file, the wall seconds spent reading the media (decoding, face detection, crops) and in
      the model, ``real_time_factor`` (seconds of media per wall second) and, for a model that
      uses faces, ``face_tracks`` (the file's number of face tracks); ``lengths``, the frames
      of each stream read (``{"audio": ..., "video": ...}``), and ``trimmed_frames``, the frames
      cut from the longer one (0 for one stream).

      With ``faces="all"``, indexed by (``track``, ``time``) instead, sorted by track then time:
      a row per frame of each track's life (its first to its last detection, the frames of its
      gaps included, ``face_found`` 0 there) with its predictions, ``face_found``, its box
      ``x, y, w, h`` (pixels of the frame as displayed) and the detector's ``confidence``
      (NaN where not found, and for Haar); ``table.loc[track_id]`` is one track's trace.
      ``attrs`` also holds ``main_track`` (the id the converter would keep) and
      ``full_detection_share`` (the share of frames searched whole).

    Raises DataError naming the file when it is unreadable, lacks the audio track or video the
    model needs, has no face in any frame for a model that uses faces, or its audio and picture
    differ by more than ``max_length_mismatch`` frames.
    """
    import pandas as pd  # noqa: PLC0415

    from emotion_e2e.data import sources, tracking  # noqa: PLC0415

    predictor = model if isinstance(model, Predictor) else Predictor.load(model, checkpoint)
    modalities, labels = predictor.modalities, predictor.label_names
    check_faces(faces, modalities)
    if neutral_band is not None:
        quadrants.check(labels, neutral_band)
    cfg = predictor.convert_config(face_detector, max_length_mismatch)
    chunk = chunk_frames(chunk_seconds, cfg.time_base)
    check_media(path, modalities)
    recording = sources.MediaRecording(RECORDING_ID, PARTITION, audio=path if "audio" in modalities else None,
                                       video=path if "face" in modalities else None)
    start = time.perf_counter()
    seconds = {"media": 0.0, "model": 0.0}
    info = {}  # what the file's faces add to attrs
    try:
        lengths = recording.media_lengths(cfg)
        n, _ = recording.frame_count(cfg, lengths)
        if faces == ALL:
            table, n, result = _predict_tracks(predictor, recording, path, cfg, n, chunk, progress, seconds, start)
            info = {"face_tracks": len(result.tracks), "main_track": tracking.main_track(result.tracks).id,
                    "full_detection_share": result.full_detection_share}
        else:
            frames = recording.frames(cfg, n)
            out = {name: np.zeros(n, np.float32) for name in labels}
            found = np.zeros(n, np.int8)
            boxes = np.zeros((n, len(BOX)), np.int32)
            state, done, tracks = predictor.initial_state(), 0, None
            with _progress(n, stem(path), progress) as bar:
                while True:
                    t0 = time.perf_counter()
                    block = list(itertools.islice(frames, chunk))  # the only frames alive
                    if not block:
                        break
                    if done + len(block) > n:
                        raise DataError(f"{path}: the converter gave more than the {n} frames it announced")
                    x = model_inputs(modalities, [f.audio for f in block], [f.face_jpeg for f in block])
                    t1 = time.perf_counter()
                    y, state = predictor.stream(x, state)
                    t2 = time.perf_counter()
                    for name in labels:
                        out[name][done:done + len(block)] = y[name][0]
                    found[done:done + len(block)] = [f.face_found for f in block]
                    if "face" in modalities:
                        boxes[done:done + len(block)] = [f.face_box for f in block]
                    tracks = block[-1].face_tracks
                    done += len(block)
                    seconds["media"] += t1 - t0
                    seconds["model"] += t2 - t1
                    _advance(bar, len(block), done, cfg, start)
            if done != n:
                raise DataError(f"{path}: the converter announced {n} frames but gave {done}")
            t = np.round(cfg.time_base.frame_step * np.arange(1, n + 1), TIME_DECIMALS)
            table = pd.DataFrame(out, index=pd.Index(t, name=TIME))
            if "face" in modalities:
                table[FACE_FOUND] = found
                table[list(BOX)] = boxes
                info = {"face_tracks": tracks}
    except DataError as e:
        if path in str(e):
            raise
        raise DataError(f"{path}: {e}") from e
    if neutral_band is not None:
        table[QUADRANT] = quadrants.quadrants(table[quadrants.AROUSAL], table[quadrants.VALENCE], neutral_band)
    wall = time.perf_counter() - start
    table.attrs.update(path=path, frames=n, seconds={**seconds, "total": wall},
                       real_time_factor=n * cfg.time_base.frame_step / wall if wall > 0 else math.inf,
                       lengths=lengths,
                       trimmed_frames=max(lengths.values()) - n, **info)
    return table


def write_csv(table, path: str):
    """``table`` (``predict_file``'s) as CSV: ``time``, the label columns, ``face_found``, ``x, y, w, h`` (with
    faces="all": ``track``, ``time``, the labels, ``face_found``, ``x, y, w, h``, ``confidence``); written
    atomically: a reader sees the old file or the whole new one, and a write that fails (a full
    disk) is a DataError naming ``path`` that leaves the old file as it was."""
    run_lib.write_file(path, csv_text(table), error=DataError)


def csv_text(table, header: bool = True) -> str:
    """``table`` as ``write_csv`` writes it (its header line only with ``header``)."""
    out = table.reset_index()
    out[TIME] = [repr(float(t)) for t in out[TIME]]  # the shortest exact text: 0.12, 1234.56
    return out.to_csv(index=False, header=header, float_format=LABEL_FORMAT)


def label_columns(table) -> list[str]:
    """The label dimensions among ``table``'s columns (``predict_file``'s): its float columns but the face's."""
    return [c for c in table.columns if c not in (FACE_FOUND, *BOX, CONFIDENCE) and table[c].dtype.kind == "f"]


def plot(table, path: str, title: str):
    """A PNG of ``table``'s traces over time, a panel per label dimension; frames where the face
    was not found (its last box held) are shaded. With a ``track`` index (faces="all"), a line per
    track in each panel, not shaded."""
    from emotion_e2e.plots import plot_traces  # noqa: PLC0415

    labels = label_columns(table)
    if TRACK in table.index.names:
        wide = table[labels].unstack(TRACK)  # time × (label, track), NaN outside a track's life
        ids = wide.columns.get_level_values(TRACK).unique()
        plot_traces(path, title, wide.index.to_numpy(), {n: wide[n][ids].to_numpy() for n in labels}, error=DataError,
                    lines=[f"track {i}" for i in ids])
        return
    no_face = table[FACE_FOUND].to_numpy() == 0 if FACE_FOUND in table else None
    plot_traces(path, title, table.index.to_numpy(), {n: table[n].to_numpy() for n in labels}, no_face=no_face,
                error=DataError)


def output_paths(name: str, output_dir: str, plot_traces: bool, render_video: bool = False) -> dict[str, str]:
    """What predicting an input writes: ``{"csv": output_dir/<name>.csv}`` (and ``"png"`` with
    ``plot_traces``, ``"mp4"`` with ``render_video``), ``name`` its ``predict_inputs.Input.name``
    (the stem, or ``a/b`` for ``DIR/a/b.mp4``)."""
    exts = ("csv",) + ("png",) * plot_traces + ("mp4",) * render_video
    return {ext: predict_inputs.output_path(output_dir, name, ext) for ext in exts}


def check_outputs(inputs, output_dir: str, plot_traces: bool, render_video: bool = False) -> None:
    """DataError when ``output_dir`` is a file or under one, or a file stands where an output's
    folder goes, or a folder where an output file goes (``<name>.csv``, ``<name>.png``,
    ``<name>.mp4``): checked before the model loads or any file decodes."""
    run_lib.check_dir(output_dir, "output directory", DataError)
    for i in inputs:
        for out in output_paths(i.name, output_dir, plot_traces, render_video).values():
            run_lib.check_dir(os.path.dirname(out), "output directory", DataError)
            if os.path.isdir(out):
                raise DataError(f"{out}, where the predictions of {i.path} go, is a directory: move it away or "
                                f"choose another --output_dir")


def predict_files(model: str | Predictor, paths, output_dir: str, *, plot_traces: bool = False,
                  checkpoint: str = "best", chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
                  face_detector: str | None = None,
                  max_length_mismatch: int | None = None, faces: str = MAIN, progress: bool = True,
                  neutral_band: float | None = None, print_rows: bool = False, report=print,
                  render_video: bool = False, keep_going: bool = False):
    """``predict_file`` for each of ``paths`` (files, folders, globs: ``predict_inputs``; live
    sources: ``live.predict_live``) with one model, writing ``output_dir/<name>.csv`` (and
    ``<name>.png`` with ``plot_traces``, ``<name>.mp4`` with ``render_video``: ``render.render``)
    and ``output_dir/summary.csv`` (``predict_summary``, rewritten after each input); returns the
    CSV paths.

    Before any prediction: ConfigError for two inputs of the same output name, a ``chunk_seconds`` out
    of range, a bad ``model`` or ``faces`` (``check_faces``), a model with one label dimension to
    ``render_video`` (``render.plane_axes``), DataError for an output that cannot
    be written (``check_outputs``), a folder or glob without media, or an input that is unreadable
    or lacks a stream the model needs. The first input that fails stops the run (its error is the
    summary's last row); with ``keep_going``, each failure is a summary row and the run goes on,
    then DataError says how many failed. ``report`` gets one line per file done or failed.
    """
    from emotion_e2e.predict_summary import Summary, row  # noqa: PLC0415 - it reads this module's columns

    inputs, skipped = predict_inputs.find(paths)
    predict_inputs.check_names(inputs)
    check_chunk_seconds(chunk_seconds)
    check_faces(faces)  # the value; the model's modalities once it is loaded
    check_outputs(inputs, output_dir, plot_traces, render_video)
    predictor = model if isinstance(model, Predictor) else Predictor.load(model, checkpoint)
    check_faces(faces, predictor.modalities)
    if neutral_band is not None:
        quadrants.check(predictor.label_names, neutral_band)
    if render_video:
        render.plane_axes(predictor.label_names)
    inputs = predict_inputs.select(inputs, skipped, predictor.modalities)
    for arg, files in skipped.items():
        report(predict_inputs.skipped_note(arg, sum(i.given == arg for i in inputs), files))
    unreadable = {}
    for i in inputs:
        try:
            if live.is_live(i.path):
                live.check_live(i.path, render_video)
            else:
                check_media(i.path, predictor.modalities)
        except DataError as e:
            if not keep_going:
                raise
            unreadable[i.path] = e
    _makedirs(output_dir)
    summary = Summary(output_dir, predictor.label_names, quadrant_shares=neutral_band is not None)
    written = []
    for i in inputs:
        out = output_paths(i.name, output_dir, plot_traces, render_video)
        csv = out["csv"]
        error = unreadable.get(i.path)
        try:
            if error is None and live.is_live(i.path):
                table = _predict_live(predictor, i.path, out, chunk_seconds, face_detector, neutral_band,
                                      print_rows, progress, report, faces)
            elif error is None:
                table = predict_file(predictor, i.path, chunk_seconds=chunk_seconds, face_detector=face_detector,
                                     max_length_mismatch=max_length_mismatch, faces=faces, progress=progress,
                                     neutral_band=neutral_band)
        except DataError as e:
            error = e
        if error is not None:
            summary.add_error(i.path, error)
            if not keep_going:
                raise error
            report(f"{i.path}: failed: {error}")
            continue
        if not live.is_live(i.path):  # a live source's CSV is written as it comes
            _makedirs(os.path.dirname(csv))
            write_csv(table, csv)
            if "png" in out:
                plot(table, out["png"], os.path.basename(i.path))
            if "mp4" in out:
                render.render(table, i.path, out["mp4"], time_base=predictor.time_base)
            a = table.attrs
            report(f"{i.path}: {a['frames']} frames ({a['frames'] * predictor.time_base.frame_step:.2f} s)"
                   f"{_tracks_note(a)}{_trimmed_note(a, predictor.time_base)} in {a['seconds']['total']:.1f} s, "
                   f"{a['real_time_factor']:.1f}× real time -> {', '.join(out.values())}")
        summary.add(row(table, predictor.label_names, predictor.time_base.frame_step))
        written.append(csv)
    if summary.failed:
        raise DataError(f"{summary.failed} of {len(inputs)} inputs failed (each one's error is in {summary.path})")
    return written


def _makedirs(folder: str):
    """``os.makedirs(folder)``; DataError naming it and the reason when it fails."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create output directory {folder}: {e.strerror or e}") from e


def _trimmed_note(attrs, time_base: TimeBase) -> str:
    """The progress line's note on the frames cut from the longer of audio and picture ('' for none)."""
    if not attrs["trimmed_frames"]:
        return ""
    longer = max(attrs["lengths"], key=attrs["lengths"].get)
    return f", {longer} {attrs['trimmed_frames'] * time_base.frame_step:.2f} s longer, trimmed"


def _predict_live(predictor, path, out, chunk_seconds, face_detector, neutral_band, print_rows, progress, report,
                  faces):
    """``predict_files`` for one live source: its CSV (``out["csv"]``, of ``output_paths``) written as
    it runs (``live.predict_live``), read back as ``predict_file``'s table (for the plot and the summary)."""
    import pandas as pd  # noqa: PLC0415

    a = live.predict_live(predictor, path, out["csv"], chunk_seconds=chunk_seconds, face_detector=face_detector,
                          neutral_band=neutral_band, print_rows=print_rows, progress=progress, faces_mode=faces)
    table = pd.read_csv(out["csv"], index_col=[TRACK, TIME] if faces == ALL else TIME)
    table.attrs.update(a, path=path)
    if "png" in out:
        plot(table, out["png"], path)
    end = "interrupted" if a["interrupted"] else "the stream ended"
    report(f"{path}: {a['frames']} frames ({a['frames'] * predictor.time_base.frame_step:.2f} s){_tracks_note(a)} "
           f"until {end}, {a['real_time_factor']:.1f}× real time, at most {a['behind']:.1f} s behind -> {out['csv']}")
    return table


def _tracks_note(attrs) -> str:
    """The progress line's note on the file's face tracks ('' for a model without faces)."""
    if "face_tracks" not in attrs:
        return ""
    note = f", {attrs['face_tracks']} face track{'s' * (attrs['face_tracks'] != 1)}"
    if "full_detection_share" in attrs:
        note += f" (main: {attrs['main_track']}; whole frame searched in {attrs['full_detection_share']:.0%})"
    return note


def define_flags():
    """The command line's flags, defined only when this module runs as a program (``--model``
    and ``--input`` would clash with other entry points' flags)."""
    from absl import flags  # noqa: PLC0415

    flags.DEFINE_string("model", None, "An export folder (its highest version), a version folder or a "
                        "training run directory.")
    flags.DEFINE_multi_string("input", None, "A video or audio file, a folder (walked; its media files found by "
                              "content), a quoted glob ('clips/**/*.mp4') or a live source: - (standard input), a URL "
                              "(rtsp://, http://, udp://, ...), a named pipe, a camera (/dev/video0) or FORMAT:DEVICE "
                              "(v4l2:/dev/video0, alsa:hw:0, pulse:default); repeat for several.")
    flags.DEFINE_bool("print", False, "Live sources: also write each chunk's rows to standard output as they come.")
    flags.DEFINE_string("output_dir", None, "Where <input stem>.csv (and .png) go, a folder's files under their "
                        "path in it; and summary.csv, a row per input.")
    flags.DEFINE_bool("plot", False, "Also write <input stem>.png, the traces over time.")
    flags.DEFINE_bool("render", False, "Also write <input stem>.mp4: the input's video (a plain background for "
                      "audio) with the face boxes and, per person, the valence-arousal point and the last seconds "
                      "of both traces drawn on it; its sound kept.")
    flags.DEFINE_enum("checkpoint", "best", list(run_lib.CHECKPOINT_FILES), "For a run directory: which checkpoint.")
    flags.DEFINE_float("chunk_seconds", DEFAULT_CHUNK_SECONDS, "Seconds of frames per model call, at most "
                       f"{MAX_CHUNK_SECONDS:g} (memory, not results, depend on it).")
    flags.DEFINE_enum("face_detector", None, list(FACE_DETECTORS), "Instead of the detector the training "
                      "data was cut with.")
    # A string checked by check_faces, not an enum: a bad value is one 'error:' line, as the others.
    flags.DEFINE_string("faces", MAIN, f"{' or '.join(FACES)}. main: the converter's main track, one trace (the "
                        "person the training data keeps); all: one trace per face track, each with its own state, "
                        "the same audio for all (<stem>.csv gets track, box and confidence columns).")
    flags.DEFINE_integer("max_length_mismatch", None, "Frames by which a video's audio and picture may differ "
                         f"(both are cut to the shorter); default: {MAX_LENGTH_MISMATCH_SECONDS:g} s of frames.",
                         lower_bound=0)
    flags.DEFINE_bool("keep_going", False, "Record a file that fails in summary.csv and go on; exit 1 at the end "
                      "if any failed.")
    flags.DEFINE_bool("quadrants", False, "Add a quadrant column: excited, tense, sad, calm or neutral "
                      "(the valence-arousal plane's quadrants; models with arousal and valence).")
    flags.DEFINE_float("neutral_band", quadrants.DEFAULT_NEUTRAL_BAND, "With --quadrants: a frame whose arousal and "
                       "valence are both within this distance of 0 is neutral.")
    flags.mark_flags_as_required(["model", "input", "output_dir"])


def main(argv):
    from absl import app, flags  # noqa: PLC0415

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    f = flags.FLAGS
    try:
        predict_files(f.model, f.input, f.output_dir, plot_traces=f.plot, checkpoint=f.checkpoint,
                      chunk_seconds=f.chunk_seconds, face_detector=f.face_detector,
                      max_length_mismatch=f.max_length_mismatch, faces=f.faces, keep_going=f.keep_going,
                      neutral_band=f.neutral_band if f.quadrants else None, print_rows=f.print,
                      report=lambda line: print(line, file=sys.stderr if f.print else sys.stdout),
                      render_video=f.render)
    except (ConfigError, DataError) as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    from absl import app

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    define_flags()
    app.run(main)
