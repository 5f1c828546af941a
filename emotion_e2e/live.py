"""Live sources for ``predict`` (docs/design.md §10): a stream read once, as it comes.

A live source is what FFmpeg opens and reads in one pass without knowing its end: ``-``
(standard input), a URL (``rtsp://``, ``http://``, ``udp://``, ...), a named pipe (FIFO), a
character device such as a camera ``/dev/video0``, or ``FORMAT:DEVICE`` for FFmpeg's capture
devices (``v4l2:/dev/video0``, ``alsa:hw:0``, ``pulse:default``); or two of them as
``VIDEO+AUDIO`` (a camera and a microphone), read side by side. A file is decoded twice to
find every face track before cutting any crop; a stream cannot be, so here everything happens
in one pass over one container:

- the audio and video packets are decoded in the order they arrive, the audio mixed to mono and
  resampled block by block (``media.StreamingResampler``, the same filter as for files), the
  pictures put on the 40 ms grid by the rule for files (grid frame i shows the last picture at or
  before its end), each grid frame released as soon as both its samples and its picture are in;
- faces are tracked as they come (``tracking.Tracker`` without history, so memory stays
  constant) and each frame is cut from the box of the track kept so far (``tracking.online_main``:
  the converter's rule over the frames seen), held after that face is gone; frames before any
  face are black, ``face_found`` 0, their box ``NO_BOX``;
- the crops go through the JPEG round trip and the training reader's decoder, and the model's
  ``stream`` signature runs every ``chunk_seconds``, its state carried.

``predict_live`` appends each chunk's rows to the CSV (flushed) and, with ``print_rows``, to
standard output as they are produced, and reports how far behind the stream it runs. The end of
the stream or an interrupt (Ctrl-C, SIGINT) ends it with every row of the frames read written.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import os
import queue
import signal
import stat
import sys
import threading
import time
from typing import Iterator, NamedTuple

import av
import numpy as np

from emotion_e2e.config import MODALITIES, STREAM_KIND, TimeBase
from emotion_e2e.data import faces, media, tracking
from emotion_e2e.data.convert import ConvertConfig, Frame
from emotion_e2e.errors import ConfigError, DataError

STDIN = "-"
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt", "rtp")
DEVICE_FORMATS = ("v4l2", "alsa", "pulse")  # FORMAT:DEVICE (FFmpeg's capture devices on Linux)
NO_BOX = (0, 0, 0, 0)  # the box column of the frames before the first face
# FFmpeg reads this many bytes before it names the streams (its default, 5 MB, holds a WAV's first
# rows until the whole file has come): the least it allows. What is not known yet is read from
# the decoded frames, as everything here reads it anyway.
PROBE_BYTES = 32
# The video decoder's threads: FFmpeg's frame threading (what "AUTO" picks for H.264) returns each
# picture as many frames late as it has threads less one, 67 ms at 30 fps on two cores; slice
# threading returns it at once. A live source needs its pictures now more than decoded faster: a
# 1080p H.264 stream of 35 Mbit/s decoded at 3.8 ms a frame here (4.0 with frame threading).
LIVE_THREADING = "SLICE"
# Frames decoded ahead of the model, in chunks: what the source's buffer does not have to hold.
READ_AHEAD_CHUNKS = 2
POLL_SECONDS = 0.1  # how often a reader waiting for frames looks for an interrupt
STOP_SECONDS = 5.0  # how long an interrupted run waits for its reading thread to close the source
# A live reader further behind the stream than this warns (once per LAG_REPORT_SECONDS while it is).
LAG_WARNING_SECONDS = 2.0
LAG_REPORT_SECONDS = 10.0


def device_format(path: str) -> tuple[str, str] | None:
    """``(format, device)`` of a ``FORMAT:DEVICE`` source, else None."""
    head, sep, tail = path.partition(":")
    return (head, tail) if sep and head in DEVICE_FORMATS and tail else None


def split_pair(path: str) -> tuple[str, str] | None:
    """``(video source, audio source)`` of ``VIDEO+AUDIO``, two live sources read together (a
    camera and a microphone: ``v4l2:/dev/video0+alsa:hw:0``), split at the last ``+`` whose two
    sides are live sources; None for one source."""
    for k in range(len(path) - 1, 0, -1):
        if path[k] == "+" and _is_one_live(path[:k]) and _is_one_live(path[k + 1:]):
            return path[:k], path[k + 1:]
    return None


def is_live(path) -> bool:
    """Whether ``path`` names a live source (see the module's docstring), or ``VIDEO+AUDIO`` two
    of them (``split_pair``), rather than a file."""
    path = os.fspath(path)
    return _is_one_live(path) or split_pair(path) is not None


def _is_one_live(path: str) -> bool:
    if path == STDIN or device_format(path) or "://" in path and path.split("://")[0].lower() in URL_SCHEMES:
        return True
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def _open_args(path: str) -> tuple[str, str | None]:
    """What ``av.open`` opens for ``path``: ``(file or URL, format or None)``."""
    if path == STDIN:
        return "pipe:0", None
    device = device_format(path)
    if device:
        return device[1], device[0]
    if os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode):
        return path, "v4l2"  # a camera
    return path, None


def live_frames(path: str, time_base: TimeBase, kinds: tuple[str, ...]) -> Iterator[tuple[np.ndarray | None,
                                                                                         np.ndarray | None]]:
    """Per grid frame of the live source ``path``, as soon as it is complete: ``(audio, picture)``,
    the ``(samples_per_frame,)`` float32 mono samples (None unless "audio" in ``kinds``) and the
    ``(H, W, 3)`` uint8 RGB picture as displayed (None unless "video" in ``kinds``).

    Audio time 0 is the first sample, video time 0 the video stream's start, as for files. At the
    end of the stream the frames whose samples and picture have begun are given (the last audio
    frame zero-padded), up to the shorter of the two. DataError naming ``path`` when it cannot be
    opened or lacks a stream of ``kinds``.
    """
    spf, step = time_base.samples_per_frame, media.exact_step(time_base)
    file, fmt = _open_args(path)
    try:
        container = av.open(file, format=fmt, options={"probesize": str(PROBE_BYTES)})
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{path}: cannot open the live source: {type(e).__name__}: {e}") from e
    with container:
        streams = {}
        for kind in kinds:
            found = getattr(container.streams, kind)
            if not found:
                have = ", ".join(s.type for s in container.streams) or "none"
                raise DataError(f"{path}: expected an {kind} stream, the source has streams: {have}")
            streams[kind] = found[0]
        if "video" in streams:
            streams["video"].thread_type = LIVE_THREADING
        audio_q, video_q = collections.deque(), collections.deque()
        state = {"carry": np.zeros(0, np.float32), "resampler": None, "converter": None, "samples": 0,
                 "start": None, "held": None, "next": 1, "last": None}

        def take_audio(frame):
            if state["converter"] is None:
                state["converter"] = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=frame.sample_rate)
                state["rate"] = frame.sample_rate
                state["resampler"] = media.StreamingResampler(frame.sample_rate, time_base.sample_rate)
            for out in state["converter"].resample(frame):
                push_audio(out.to_ndarray())

        def push_audio(block, flush=False):
            if block is not None:
                media.check_finite(path, block, state["samples"], state["rate"], time_base)
                state["samples"] += block.shape[1]
                state["carry"] = np.concatenate([state["carry"], state["resampler"].push(block.mean(axis=0))])
            if flush:
                state["carry"] = np.concatenate([state["carry"], state["resampler"].flush()])
            carry = state["carry"]
            whole = len(carry) // spf if not flush else -(-len(carry) // spf)
            for k in range(whole):
                audio_q.append(media.pad_frame(carry[k * spf:(k + 1) * spf], spf))
            state["carry"] = carry[whole * spf:]

        orient = media.FrameOrientation(path)

        def rgb(frame):
            arr = media.displayed(frame, orient(frame))
            arr.flags.writeable = False
            return arr

        def take_video(frame):
            if frame.pts is None:
                raise DataError(f"{path}: a video frame has no timestamp (expected pts on every frame)")
            stream = streams["video"]
            if state["start"] is None:
                state["start"] = media.stream_start(stream, frame.pts)
            t = (frame.pts - state["start"]) * stream.time_base
            picture = rgb(frame)
            while t > step * state["next"]:  # grid frame `next` ends before this picture: the held one is its
                video_q.append(state["held"] if state["held"] is not None else picture)
                state["next"] += 1
            state["held"], state["last"] = picture, t

        def ready():
            while (audio_q or "audio" not in streams) and (video_q or "video" not in streams):
                yield (audio_q.popleft() if "audio" in streams else None,
                       video_q.popleft() if "video" in streams else None)

        try:
            for packet in container.demux(*streams.values()):
                for frame in packet.decode():
                    (take_audio if packet.stream.type == "audio" else take_video)(frame)
                yield from ready()
        except (av.error.FFmpegError, OSError) as e:
            begun = state["next"] > 1 or state["samples"]
            if not (getattr(e, "errno", None) == errno.EIO and "://" in path and begun):
                raise DataError(f"{path}: the live source failed: {type(e).__name__}: {e}") from e
            # An HTTP response of unknown length ends with the connection, which FFmpeg reports as an
            # I/O error: the stream's end.
            print(f"warning: {path}: the connection closed without an end-of-stream mark ({e.strerror}); "
                  f"taken as the end of the stream", file=sys.stderr)
            for stream in streams.values():  # what the decoders hold, as the demuxer's last packets would give
                for frame in stream.codec_context.decode(None):
                    (take_audio if stream.type == "audio" else take_video)(frame)
        # The end: the last picture covers the grid frames it has begun; the audio's tail is padded.
        if "audio" in streams and state["resampler"] is not None:
            for out in state["converter"].resample(None):
                push_audio(out.to_ndarray())
            push_audio(None, flush=True)
        if "video" in streams and state["held"] is not None:
            while step * (state["next"] - 1) <= state["last"]:
                video_q.append(state["held"])
                state["next"] += 1
        yield from ready()


class _OnlineCrops:
    """The face crop of each frame of a stream as it comes (see the module's docstring)."""

    def __init__(self, cfg: ConvertConfig, detector):
        self.cfg, self.detector = cfg, detector
        self.tracker = tracking.Tracker(cfg.face.track, history=False)
        self.held = None  # (box, eyes) of the kept track at its latest frame

    def __call__(self, picture: np.ndarray, source: str) -> tuple[np.ndarray, bool, tuple[int, int, int, int]]:
        tracking.track_frame(self.tracker, picture, self.detector, self.cfg.face, source)
        main = tracking.online_main(self.tracker)
        if main is not None:
            self.held = main.box, main.held_eyes
        if self.held is None:
            size = self.cfg.face.size
            return np.zeros((size, size, 3), np.uint8), False, NO_BOX
        box, eyes = self.held
        crop = faces.crop_face(picture, box, self.cfg.face, eyes)  # turned by the eyes only for align "eyes"
        return crop, main is not None and main.found_now, tuple(box)

    @property
    def num_tracks(self) -> int:
        return self.tracker.ended + len(self.tracker.live)


def source_frames(path: str, time_base: TimeBase, modalities):
    """``live_frames`` of one source for the streams ``modalities`` are read from, or of
    ``VIDEO+AUDIO`` (``split_pair``): the two read side by side, each frame's picture from the
    first and its samples from the second, each on its own time (its first picture, its first
    sample: time 0), to the end of the shorter."""
    kinds = tuple(STREAM_KIND[m] for m in MODALITIES if m in modalities)
    pair = split_pair(path)
    if pair is None or len(kinds) < 2:
        if pair is not None:  # one modality: the source that has it
            path = pair[0] if kinds == ("video",) else pair[1]
        yield from live_frames(path, time_base, kinds)
        return
    pictures, sounds = live_frames(pair[0], time_base, ("video",)), live_frames(pair[1], time_base, ("audio",))
    try:
        for (_, picture), (audio, _) in zip(pictures, sounds):
            yield audio, picture
    finally:
        pictures.close()
        sounds.close()


def converter_frames(path: str, cfg: ConvertConfig, modalities, detector) -> Iterator[Frame]:
    """``live_frames`` of ``path`` as the converter's ``Frame``\\ s: audio samples, the JPEG of the
    face crop (``_OnlineCrops``), ``face_found`` and the number of face tracks so far."""
    crops = _OnlineCrops(cfg, detector) if "face" in modalities else None
    for audio, picture in source_frames(path, cfg.time_base, modalities):
        if crops is None:
            yield Frame(audio, None, False, None, None)
            continue
        crop, found, box = crops(picture, path)
        yield Frame(audio, faces.encode_jpeg(crop, cfg.face.jpeg_quality), found, None, crops.num_tracks, box)


class TrackCrop(NamedTuple):
    """One live track in one frame (``faces="all"``): its id, the JPEG of its crop, whether its face
    was found there, its box and the detector's score (NaN where carried)."""

    id: int
    face_jpeg: bytes
    face_found: bool
    face_box: tuple[int, int, int, int]
    score: float


class TracksFrame(NamedTuple):
    """One frame of a live source for ``faces="all"``: its audio (None without) and every track alive in it."""

    audio: np.ndarray | None
    tracks: tuple[TrackCrop, ...]
    face_tracks: int  # tracks started so far


def track_frames(path: str, cfg: ConvertConfig, modalities, detector) -> Iterator[TracksFrame]:
    """``live_frames`` of ``path`` with a crop for every track alive in each frame: from its first
    detection to its end (``max_gap`` frames after its last one, its box carried meanwhile)."""
    tracker = tracking.Tracker(cfg.face.track, history=False)
    for audio, picture in source_frames(path, cfg.time_base, modalities):
        tracking.track_frame(tracker, picture, detector, cfg.face, path)
        crops = tuple(
            TrackCrop(t.id, faces.encode_jpeg(faces.crop_face(picture, t.box, cfg.face, t.held_eyes),
                                              cfg.face.jpeg_quality), t.found_now, tuple(t.box), float(t.score_now))
            for t in tracker.live)
        yield TracksFrame(audio, crops, tracker.ended + len(tracker.live))


class _MainChunks:
    """``faces="main"``: a chunk of ``converter_frames`` → its table, one LSTM state carried."""

    def __init__(self, predictor):
        self.predictor, self.state = predictor, predictor.initial_state()

    def table(self, block, first: int, step: float):
        import pandas as pd  # noqa: PLC0415

        from emotion_e2e import predict  # noqa: PLC0415

        p = self.predictor
        x = predict.model_inputs(p.modalities, [f.audio for f in block], [f.face_jpeg for f in block])
        y, self.state = p.stream(x, self.state)
        times = [round(step * (first + k), predict.TIME_DECIMALS) for k in range(len(block))]
        table = pd.DataFrame({n: y[n][0] for n in p.label_names}, index=pd.Index(times, name=predict.TIME))
        if "face" in p.modalities:
            table[predict.FACE_FOUND] = np.array([f.face_found for f in block], np.int8)
            table[list(predict.BOX)] = np.array([f.face_box for f in block], np.int64)
        return table


class _TrackChunks:
    """``faces="all"``: a chunk of ``track_frames`` → its table indexed by (track, time), each
    track through the model on its frames of the chunk with its own LSTM state (dropped when the
    track ends), the room's audio shared, as ``predict_file(faces="all")`` does."""

    def __init__(self, predictor):
        self.predictor, self.states = predictor, {}

    def table(self, block, first: int, step: float):
        import pandas as pd  # noqa: PLC0415

        from emotion_e2e import predict  # noqa: PLC0415

        p, parts = self.predictor, []
        ids = list(dict.fromkeys(c.id for f in block for c in f.tracks))  # in order of appearance
        for track in ids:
            rows = [(k, next(c for c in f.tracks if c.id == track)) for k, f in enumerate(block)
                    if any(c.id == track for c in f.tracks)]
            x = predict.model_inputs(p.modalities, [block[k].audio for k, _ in rows],
                                     [c.face_jpeg for _, c in rows])
            y, self.states[track] = p.stream(x, self.states.get(track) or p.initial_state())
            index = pd.MultiIndex.from_arrays(
                [[track] * len(rows), [round(step * (first + k), predict.TIME_DECIMALS) for k, _ in rows]],
                names=[predict.TRACK, predict.TIME])
            part = pd.DataFrame({n: y[n][0] for n in p.label_names}, index=index)
            part[predict.FACE_FOUND] = np.array([c.face_found for _, c in rows], np.int8)
            part[list(predict.BOX)] = np.array([c.face_box for _, c in rows], np.int64)
            part[predict.CONFIDENCE] = np.array([c.score for _, c in rows], np.float32)
            parts.append(part)
        alive = {c.id for c in block[-1].tracks}
        self.states = {t: s for t, s in self.states.items() if t in alive}
        if parts:
            return pd.concat(parts)
        columns = [*p.label_names, predict.FACE_FOUND, *predict.BOX, predict.CONFIDENCE]
        return pd.DataFrame(columns=columns, index=pd.MultiIndex.from_arrays([[], []], names=[predict.TRACK,
                                                                                            predict.TIME]))


class Lag:
    """How far a live reader runs behind its stream: the wall seconds since the first frame was
    read minus the media seconds done; warns on stderr while it exceeds ``LAG_WARNING_SECONDS``."""

    def __init__(self, source: str, frame_step: float, report=None):
        self.source, self.step = source, frame_step
        self.report = report or (lambda line: print(line, file=sys.stderr, flush=True))
        self.start = self.warned = None
        self.worst = 0.0

    def update(self, frames_done: int) -> float:
        now = time.perf_counter()
        if self.start is None:
            self.start = now - self.step  # the first frame's end arrived now
        behind = max(0.0, now - self.start - frames_done * self.step)
        self.worst = max(self.worst, behind)
        if behind > LAG_WARNING_SECONDS and (self.warned is None or now - self.warned >= LAG_REPORT_SECONDS):
            self.warned = now
            self.report(f"warning: {self.source}: {behind:.1f} s behind the stream ({round(behind / self.step)} frames "
                        f"queued): the model does not keep up, the frames wait in the source's buffer")
        return behind


def check_live(path: str, render_video: bool = False) -> None:
    """ConfigError for what a live source cannot do: a rendered video needs the whole file (it is
    drawn on a second decoding)."""
    if render_video:
        raise ConfigError(f"{path} is a live source, read once as it comes: --render draws on the file decoded "
                          f"again (save the stream to a file and render that)")


class _Reader(threading.Thread):
    """Reads ``frames`` in a thread of its own into a queue of at most ``ahead`` frames, so the
    caller waits on the queue, which an interrupt can cut short, and not inside FFmpeg, which
    retries a read interrupted by a signal and would block on a stalled pipe. ``get`` returns the
    next frame, None at the end, or raises what reading raised."""

    _END = object()

    def __init__(self, frames, ahead: int):
        super().__init__(daemon=True)  # left blocked in a read of a stalled source when interrupted
        self.frames, self.queue, self.stopped = frames, queue.Queue(maxsize=ahead), threading.Event()

    def run(self):
        try:
            for frame in self.frames:
                if not self._put(frame):
                    return  # stopped: the source is closed as the generator ends
            self._put(self._END)
        except BaseException as e:  # noqa: BLE001 - handed to the reading thread
            self._put(e)

    def _put(self, item) -> bool:
        """Queues ``item``; False once ``stopped`` is set."""
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def stop(self):
        """Stops reading and waits a moment for the thread to close the source: a thread left
        decoding (in OpenCV, FFmpeg) when the interpreter exits can abort it. A source stalled in
        a read keeps its thread, blocked in FFmpeg, until the process ends."""
        self.stopped.set()
        self.join(timeout=STOP_SECONDS)

    def get(self, interrupted: threading.Event):
        """The next frame; None at the end of the stream or once ``interrupted`` is set."""
        while not interrupted.is_set():
            try:
                item = self.queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise item
            return None if item is self._END else item
        return None


def _silence_stdout():
    """Points standard output at /dev/null, so that the interpreter's last flush of rows nobody
    reads does not fail again at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


@contextlib.contextmanager
def _interrupt_flag():
    """An Event set by SIGINT (Ctrl-C) instead of KeyboardInterrupt while in the block, so that a
    chunk the model is running on is finished and written; outside the main thread, where
    signals cannot be caught, a flag that stays clear."""
    flag = threading.Event()
    try:
        previous = signal.signal(signal.SIGINT, lambda *_: flag.set())
    except ValueError:  # not the main thread
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def predict_live(predictor, path: str, csv_path: str, *, chunk_seconds: float, face_detector: str | None = None,
                 neutral_band: float | None = None, print_rows: bool = False, progress: bool = True,
                 faces_mode: str = "main", warn=None) -> dict:
    """Runs ``predictor`` (a ``predict.Predictor``) on the live source ``path`` until it ends or
    is interrupted, appending each chunk's rows to ``csv_path`` (written from its header; flushed
    after every chunk) and, with ``print_rows``, to standard output. Returns what
    ``predict_file`` puts in ``attrs``: ``frames``, ``seconds`` (media, model, total),
    ``real_time_factor``, ``face_tracks`` for a face model, and ``behind`` (the most seconds it
    ran behind the stream) and ``interrupted``. ``warn`` gets the lag warnings (stderr by default).

    ``faces_mode`` "all": a trace per face track, rows indexed by (track, time) with the box and
    the detector's confidence, as ``predict_file(faces="all")`` writes them, but in the order they
    come: per chunk, track by track. A track's rows run from its first detection to its end
    (``max_gap`` frames after its last detection, the carried frames included, ``face_found`` 0):
    read as it comes, a stream cannot know that a track has ended until then.
    """
    from emotion_e2e import predict  # noqa: PLC0415 - predict runs this module
    from emotion_e2e.data import sources  # noqa: PLC0415

    if neutral_band is not None:
        from emotion_e2e import quadrants  # noqa: PLC0415
    cfg = predictor.convert_config(face_detector)
    chunk = predict.chunk_frames(chunk_seconds, cfg.time_base)
    modalities, step = predictor.modalities, cfg.time_base.frame_step
    detector = sources.detector(cfg.face) if "face" in modalities else None
    frames = (track_frames if faces_mode == "all" else converter_frames)(path, cfg, modalities, detector)
    reader = _Reader(frames, READ_AHEAD_CHUNKS * chunk)
    chunks = (_TrackChunks if faces_mode == "all" else _MainChunks)(predictor)
    lag = Lag(path, step, warn)
    seconds = {"media": 0.0, "model": 0.0}
    done, tracks, ended, start = 0, None, False, time.perf_counter()
    with (_interrupt_flag() as interrupted, open(csv_path, "w", newline="") as out,
          predict._progress(None, predict.stem(path), progress) as bar):
        reader.start()
        try:
            while not ended:
                block = []
                t0 = time.perf_counter()
                while len(block) < chunk:
                    frame = reader.get(interrupted)
                    if frame is None:
                        ended = True
                        break
                    block.append(frame)
                seconds["media"] += time.perf_counter() - t0
                if not block:
                    break
                t1 = time.perf_counter()
                table = chunks.table(block, done + 1, step)
                seconds["model"] += time.perf_counter() - t1
                if "face" in modalities:
                    tracks = block[-1].face_tracks
                if neutral_band is not None:
                    table[predict.QUADRANT] = quadrants.quadrants(table[quadrants.AROUSAL], table[quadrants.VALENCE],
                                                                  neutral_band)
                text = predict.csv_text(table, header=done == 0)
                out.write(text)
                out.flush()
                if print_rows:
                    try:
                        sys.stdout.write(text)
                        sys.stdout.flush()
                    except BrokenPipeError:  # the reader of the rows went away (`| head`): the run ends, as interrupted
                        _silence_stdout()
                        print_rows = False
                        interrupted.set()
                done += len(block)
                behind = lag.update(done)
                bar.update(len(block))
                bar.set_postfix_str(f"{done * step / (time.perf_counter() - start):.1f}× real time, "
                                    f"{behind:.1f} s behind ({round(behind / step)} frames queued)")
        finally:
            reader.stop()
    if not done:
        raise DataError(f"{path}: the live source ended before one whole frame")
    wall = time.perf_counter() - start
    attrs = {"path": path, "frames": done, "seconds": {**seconds, "total": wall},
             "real_time_factor": done * step / wall, "behind": lag.worst, "interrupted": interrupted.is_set()}
    if "face" in modalities:
        attrs["face_tracks"] = tracks
    return attrs
