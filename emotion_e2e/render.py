r"""Draws a file's predictions on its own video: ``python -m emotion_e2e.predict --render``'s ``<stem>.mp4``.

The input's video frames (as displayed: a phone's rotation flag applied, ``media.displayed_frames``)
at their own times, frame rate and size, or, for a file without a picture, a plain background at
the time base's frame rate (25/s), with drawn on each: the face box of every person (the main
track's with faces="main", every live track's with faces="all", its track id when there are
several) and, per person, a panel: the current (valence, arousal) as a point on the
valence-arousal plane and the last ``RenderConfig.history_seconds`` of both traces. The input's
audio is copied packet for packet when MP4 holds its codec (AAC, MP3, Opus, ...), else
re-encoded to AAC (a WAV's PCM; at the nearest higher rate AAC takes, for one it does not); the
picture is H.264 (libx264, yuv420p).

Which prediction a frame shows: prediction frame i covers the times (step·(i-1), step·i] (its
row's ``time`` is step·i), and a video frame shown at time t (seconds since the video stream's
start) shows the prediction frame that contains t: i = ceil(t / step), the first for t = 0 and the
last for a picture that outlasts the predictions. It is the frame the converter cut from that
picture: grid frame i takes the last video frame at or before step·i.

Everything streams: one decoded frame and a few audio packets are alive at a time, so memory
does not grow with the file's length; drawing is OpenCV on the RGB frame (no matplotlib). In
Python::

    from emotion_e2e import predict, render
    table = predict.predict_file("models/emotion", "talk.mp4")
    render.render(table, "talk.mp4", "talk_predictions.mp4")
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
from fractions import Fraction
from typing import NamedTuple

import av
import cv2
import numpy as np

from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import TimeBase
from emotion_e2e.data import media
from emotion_e2e.errors import ConfigError, DataError

# The plane's axes, x then y, when the model predicts both (Russell's circumplex: valence across,
# arousal up); another model's first two label dimensions otherwise.
PLANE_AXES = ("valence", "arousal")
# Audio codecs MP4 holds as they are: their packets are copied; any other (a WAV's PCM) is
# re-encoded to AUDIO_CODEC.
REMUX_CODECS = frozenset({"aac", "mp3", "opus", "alac", "ac3", "eac3"})
AUDIO_CODEC, AUDIO_FORMAT = "aac", "fltp"  # the sample format FFmpeg's AAC encoder takes
VIDEO_CODEC, PIXEL_FORMAT = "libx264", "yuv420p"  # what every player decodes
# Colours (RGB): a person's box, point and id; the traces of the x and y axes' dimensions.
PERSON_COLOURS = ((255, 196, 0), (0, 214, 255), (255, 92, 170), (120, 230, 90), (200, 140, 255), (255, 255, 255))
TRACE_COLOURS = ((90, 170, 255), (255, 120, 60))
GRID_COLOUR = (150, 150, 150)
TEXT_COLOUR = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
REFERENCE_HEIGHT = 720  # line widths and text sizes scale with the frame's shorter side over this
MARGIN, MIN_MARGIN = 12, 4  # pixels around and between the panels at REFERENCE_HEIGHT, and at least
TRACE_WIDTH = 2  # a panel's traces are this many planes wide
MIN_LINE = 2  # pixels: a thinner coloured line loses its colour to 4:2:0's half-resolution chroma


@dataclasses.dataclass(frozen=True)
class RenderConfig:
    """How the rendered video looks and is encoded.

    Attributes:
      history_seconds: the seconds of both traces each panel shows, up to the current frame.
      plane_fraction: the side of a panel's valence-arousal plane as a share of the frame's shorter
        side (its traces are ``TRACE_WIDTH`` times as wide), smaller for several people at once so
        that their panels fit side by side.
      min_plane_pixels: the plane's side on frames too small for ``plane_fraction`` to be legible.
      shade: the brightness the picture keeps behind a panel, in [0, 1].
      background: the RGB colour of the picture of a file without video.
      size: (height, width) of the picture of a file without video.
      crf, preset: libx264's quality (lower is better, 23 its default) and speed.
    """

    history_seconds: float = 5.0
    plane_fraction: float = 0.3
    min_plane_pixels: int = 40
    shade: float = 0.35
    background: tuple[int, int, int] = (28, 30, 38)
    size: tuple[int, int] = (360, 640)
    crf: int = 20
    preset: str = "veryfast"

    def __post_init__(self):
        if not (self.history_seconds > 0 and 0 < self.plane_fraction <= 1 and self.min_plane_pixels > 0
                and 0 <= self.shade <= 1 and min(self.size) > 0):
            raise ConfigError(f"RenderConfig needs history_seconds > 0, plane_fraction in (0, 1], "
                              f"min_plane_pixels > 0, shade in [0, 1] and a positive size. Received: {self}")


def plane_axes(label_names) -> tuple[str, str]:
    """The label dimensions on the plane's x and y axes: ``PLANE_AXES`` when the model predicts
    both, else its first two; ConfigError for a model with fewer than two."""
    names = list(label_names)
    if all(a in names for a in PLANE_AXES):
        return PLANE_AXES
    if len(names) < 2:
        raise ConfigError(f"rendering draws a point on a plane of two label dimensions (valence, arousal), "
                          f"but the model predicts {names}")
    return names[0], names[1]


class _Person(NamedTuple):
    """One trace of ``render``'s table: its track id (None for faces="main"), its first grid frame
    (1-based), per frame of its rows the plane's x and y values, and the face box ``(n, 4)``
    (None for a model without faces) and whether it was found there ``(n,)``."""

    id: int | None
    first: int
    xy: np.ndarray  # (n, 2) float
    boxes: np.ndarray | None
    found: np.ndarray | None

    def row(self, frame: int) -> int | None:
        """The row of 1-based grid ``frame``, None outside the person's rows."""
        k = frame - self.first
        return k if 0 <= k < len(self.xy) else None


def _people(table, axes, step: float) -> list[_Person]:
    """The persons of ``predict_file``'s ``table``: one without a ``track`` index, one per track with it."""
    from emotion_e2e import predict  # noqa: PLC0415 - predict imports this module for --render

    def person(track_id, rows):
        frames = np.rint(rows.index.to_numpy(np.float64) / step).astype(np.int64)
        if len(frames) and not (np.diff(frames) == 1).all():
            raise DataError(f"the predictions of {'the file' if track_id is None else f'track {track_id}'} are not "
                            f"one row per {step:g} s frame (times {rows.index[:3].tolist()}...)")
        has_box = all(c in rows for c in predict.BOX)
        return _Person(track_id, int(frames[0]) if len(frames) else 1, rows[list(axes)].to_numpy(np.float64),
                       rows[list(predict.BOX)].to_numpy(np.int64) if has_box else None,
                       rows[predict.FACE_FOUND].to_numpy() != 0 if predict.FACE_FOUND in rows else None)

    if predict.TRACK in table.index.names:
        return [person(int(k), rows.droplevel(predict.TRACK)) for k, rows in table.groupby(level=predict.TRACK)]
    return [person(None, table)]


def _most_alive(people: list[_Person]) -> int:
    """The most people whose rows share a frame."""
    if not people:
        return 0
    change = collections.Counter()
    for p in people:
        change[p.first] += 1
        change[p.first + len(p.xy)] -= 1
    return max(itertools.accumulate(change[f] for f in sorted(change)))


class Painter:
    """Draws the boxes and panels of every person on frames of one size."""

    def __init__(self, people: list[_Person], axes, height: int, width: int, step: float, cfg: RenderConfig):
        self.people, self.axes, self.cfg = people, axes, cfg
        self.history = max(2, round(cfg.history_seconds / step))  # frames per trace
        values = np.concatenate([p.xy for p in people]) if people else np.zeros((0, 2))
        finite = values[np.isfinite(values)]
        # [-1, 1], or wider when a value lies outside it (the point would leave the plane)
        self.limit = max(1.0, float(np.abs(finite).max())) if finite.size else 1.0
        scale = min(height, width) / REFERENCE_HEIGHT
        self.line = max(MIN_LINE, round(2 * scale))
        self.font = max(0.3, 0.6 * scale)
        self.text_height = cv2.getTextSize("A", FONT, self.font, 1)[0][1]
        m = self.margin = max(MIN_MARGIN, round(MARGIN * scale))
        # The panels of the people alive at once side by side in one row when they fit
        # (a panel is a plane and its traces, TRACE_WIDTH planes wide), in rows upwards when not.
        slots = _most_alive(people)
        fit = ((width - m) // max(slots, 1) - 4 * m) // (1 + TRACE_WIDTH)
        self.plane = max(cfg.min_plane_pixels, min(round(cfg.plane_fraction * min(height, width)), fit))
        self.traces = max(0, min(TRACE_WIDTH * self.plane, width - self.plane - 4 * m))
        self.panel_w = self.plane + self.traces + 3 * m
        self.panel_h = self.plane + 2 * m + (self.text_height + m) * (len(people) > 1)
        self.per_row = max(1, (width - m) // (self.panel_w + m))
        self.height, self.width = height, width

    def draw(self, rgb: np.ndarray, frame: int):
        """Draws on ``rgb`` (H, W, 3) in place what 1-based grid ``frame`` predicts."""
        live = [(k, p, r) for k, p in enumerate(self.people) if (r := p.row(frame)) is not None]
        for k, p, r in live:
            if p.boxes is not None:
                self._box(rgb, k, p, r)
        for slot, (k, p, r) in enumerate(live):
            self._panel(rgb, slot, k, p, r)

    def _colour(self, k):
        return PERSON_COLOURS[k % len(PERSON_COLOURS)]

    def _box(self, rgb, k, p: _Person, r: int):
        x, y, w, h = (int(v) for v in p.boxes[r])
        held = p.found is not None and not p.found[r]  # the box carried where the face was not found
        cv2.rectangle(rgb, (x, y), (x + w, y + h), self._colour(k), max(1, self.line // 2) if held else self.line)
        if p.id is not None and len(self.people) > 1:
            cv2.putText(rgb, f"track {p.id}", (x, max(self.text_height, y - self.line - 2)), FONT, self.font,
                        self._colour(k), 1, cv2.LINE_AA)

    def panel(self, slot: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of the ``slot``-th panel drawn on a frame (0: bottom left, then to
        the right, rows upwards)."""
        m = self.margin
        x = m + (slot % self.per_row) * (self.panel_w + m)
        y = self.height - m - (slot // self.per_row) * (self.panel_h + m) - self.panel_h
        return x, y, self.panel_w, self.panel_h

    def plane_at(self, slot: int) -> tuple[int, int, int]:
        """``(x, y, side)`` of the valence-arousal plane of the ``slot``-th panel: pixel (x, y) is
        (-limit, +limit), (x + side - 1, y + side - 1) is (+limit, -limit)."""
        x, y, _, _ = self.panel(slot)
        m = self.margin
        return x + m, y + m + (self.text_height + m) * (len(self.people) > 1), self.plane

    def _panel(self, rgb, slot: int, k: int, p: _Person, r: int):
        x0, y0, w, h = self.panel(slot)
        area = rgb[max(0, y0):y0 + h, x0:min(self.width, x0 + w)]
        area[:] = cv2.convertScaleAbs(area, alpha=self.cfg.shade)
        x, y, s = self.plane_at(slot)
        if len(self.people) > 1:
            cv2.putText(rgb, f"track {p.id}", (x, y - self.margin), FONT, self.font, self._colour(k), 1, cv2.LINE_AA)
        self._plane(rgb, x, y, p.xy[r], self._colour(k))
        if self.traces:
            self._traces(rgb, x + s + self.margin, y, p, r)

    def _to_pixels(self, v, origin, size, flip=False):
        """Values in [-limit, limit] -> pixel offsets from ``origin`` across ``size`` pixels."""
        u = (np.clip(v, -self.limit, self.limit) / self.limit + 1) / 2
        return origin + np.round((1 - u if flip else u) * (size - 1)).astype(np.int64)

    def _plane(self, rgb, x, y, value, colour):
        s, font = self.plane, self.font
        cv2.rectangle(rgb, (x, y), (x + s - 1, y + s - 1), GRID_COLOUR, 1)
        cv2.line(rgb, (x, y + s // 2), (x + s - 1, y + s // 2), GRID_COLOUR, 1)
        cv2.line(rgb, (x + s // 2, y), (x + s // 2, y + s - 1), GRID_COLOUR, 1)
        small = font * 0.8
        (w, _), _ = cv2.getTextSize(self.axes[0], FONT, small, 1)
        cv2.putText(rgb, self.axes[0], (x + s - w - 2, y + s // 2 - 3), FONT, small, TRACE_COLOURS[0], 1, cv2.LINE_AA)
        cv2.putText(rgb, self.axes[1], (x + s // 2 + 3, y + self.text_height + 2), FONT, small, TRACE_COLOURS[1], 1,
                    cv2.LINE_AA)
        cv2.putText(rgb, f"[-{self.limit:g},{self.limit:g}]", (x + 2, y + s - 3), FONT, small, GRID_COLOUR, 1,
                    cv2.LINE_AA)
        if np.isfinite(value).all():
            px = int(self._to_pixels(value[0], x, s))
            py = int(self._to_pixels(value[1], y, s, flip=True))
            cv2.circle(rgb, (px, py), max(3, s // 14), colour, -1, cv2.LINE_AA)

    def _traces(self, rgb, x, y, p: _Person, r: int):
        w, s = self.traces, self.plane
        cv2.rectangle(rgb, (x, y), (x + w - 1, y + s - 1), GRID_COLOUR, 1)
        cv2.line(rgb, (x, y + s // 2), (x + w - 1, y + s // 2), GRID_COLOUR, 1)
        start = max(0, r - self.history + 1)
        # the current frame at the right edge, history_seconds ago at the left one
        xs = x + np.round((np.arange(start, r + 1) - (r - self.history + 1)) * (w - 1) / (self.history - 1))
        for d, colour in enumerate(TRACE_COLOURS):
            ys = self._to_pixels(p.xy[start:r + 1, d], y, s, flip=True)
            ok = np.isfinite(p.xy[start:r + 1, d])
            points = np.stack([xs[ok], ys[ok]], axis=1).astype(np.int32)
            if len(points) > 1:
                cv2.polylines(rgb, [points], False, colour, self.line, cv2.LINE_AA)
        cv2.putText(rgb, f"-{self.cfg.history_seconds:g} s", (x + 2, y + s - 3), FONT, self.font * 0.8, GRID_COLOUR,
                    1, cv2.LINE_AA)


def _frame_of(t: Fraction, step: Fraction, count: int) -> int:
    """The 1-based prediction frame a picture shown at ``t`` seconds shows: the one whose
    (step·(i-1), step·i] contains t, the first for t <= 0, at most ``count``."""
    return min(max(1, math.ceil(t / step)), max(count, 1))


def _background(path, step: Fraction, cfg: RenderConfig):
    """The picture of a file without video, as ``media.displayed_frames`` yields a video's:
    ``(t, (H, W, 3) uint8)``, the plain background every ``step`` seconds over its audio."""
    count = TimeBase(frame_step=float(step)).frames_in(media.audio_duration(path))
    plain = np.empty(cfg.size + (3,), np.uint8)
    plain[:] = cfg.background
    return ((k * step, plain.copy()) for k in range(count))


def encoder_rate(rate: int) -> int:
    """The sample rate the audio encoder is given for sound at ``rate``: ``rate`` when it takes it,
    else the nearest higher one it takes (the highest, above them all). PyAV's encoder resamples
    the decoded frames to it."""
    rates = av.codec.Codec(AUDIO_CODEC, "w").audio_rates or (rate,)
    return min((r for r in rates if r >= rate), default=max(rates))


def _audio_packets(source, dst, path):
    """The output's audio stream in ``dst`` for ``source``'s first audio stream (None without one)
    and a generator of its packets, ready to mux: copied for ``REMUX_CODECS``, else encoded."""
    if not source.streams.audio:
        return None, iter(())
    stream = source.streams.audio[0]
    if stream.codec_context.name in REMUX_CODECS:
        out = dst.add_stream_from_template(stream)

        def copied():
            for packet in source.demux(stream):
                if packet.dts is None:  # the demuxer's empty flush packet
                    continue
                packet.stream = out
                yield packet

        return out, copied()
    # the channels' default layout: a WAV without a channel mask has an unnamed one the encoder refuses
    out = dst.add_stream(AUDIO_CODEC, rate=encoder_rate(stream.rate),
                         layout=av.AudioLayout(f"{stream.channels}c").name, format=AUDIO_FORMAT)

    def encoded():
        for frame in source.decode(stream):
            yield from out.encode(frame)
        yield from out.encode(None)

    return out, encoded()


def _seconds(packet) -> float:
    return float(packet.pts * packet.time_base) if packet.pts is not None else -math.inf


def painter(table, height: int, width: int, time_base: TimeBase = TimeBase(),
            config: RenderConfig = RenderConfig()) -> Painter:
    """The ``Painter`` of ``render``'s ``table`` on frames of ``height`` × ``width`` pixels
    (``Painter.plane_at`` says where it draws a person's plane)."""
    from emotion_e2e import predict  # noqa: PLC0415 - predict imports this module for --render

    axes = plane_axes(predict.label_columns(table))
    return Painter(_people(table, axes, time_base.frame_step), axes, height, width, time_base.frame_step, config)


def _write(tmp: str, path: str, table, time_base: TimeBase, cfg: RenderConfig):
    """Writes the rendered MP4 of ``path`` to ``tmp``, a frame at a time."""
    step = Fraction(time_base.frame_step).limit_denominator(1_000_000)  # exact: 0.04 is 1/25
    video = "video" in media.stream_types(path)
    frames = media.displayed_frames(path) if video else _background(path, step, cfg)
    with av.open(path) as header:
        v = header.streams.video[0] if video else None
        # the picture's own times: its stream's time base, starting where the stream starts
        ticks = v.time_base if video else step
        rate = (v.average_rate or v.guessed_rate) if video else 1 / step
        start = (v.start_time or 0) if video else 0
    with av.open(path) as source, av.open(tmp, "w", format="mp4") as dst:
        # at least one: media raises a DataError for a video without frames or audio without samples
        first = next(frames)
        height, width = first[1].shape[:2]
        out = dst.add_stream(VIDEO_CODEC, rate=rate)
        out.width, out.height = width + width % 2, height + height % 2  # 4:2:0 needs even sides
        out.pix_fmt, out.time_base = PIXEL_FORMAT, ticks
        out.codec_context.time_base = ticks
        out.options = {"crf": str(cfg.crf), "preset": cfg.preset}
        _, audio = _audio_packets(source, dst, path)
        pending = next(audio, None)
        paint = painter(table, height, width, time_base, cfg)
        count = max((p.first + len(p.xy) - 1 for p in paint.people), default=0)
        for t, rgb in itertools.chain([first], frames):
            while pending is not None and _seconds(pending) <= float(t + start * ticks):
                dst.mux(pending)
                pending = next(audio, None)
            paint.draw(rgb, _frame_of(t, step, count))
            if rgb.shape[:2] != (out.height, out.width):
                rgb = cv2.copyMakeBorder(rgb, 0, out.height - height, 0, out.width - width, cv2.BORDER_REPLICATE)
            picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            picture.pts, picture.time_base = start + round(t / ticks), ticks
            dst.mux(out.encode(picture))
        dst.mux(out.encode(None))
        while pending is not None:
            dst.mux(pending)
            pending = next(audio, None)


def render(table, path: str, output: str, *, time_base: TimeBase = TimeBase(), config: RenderConfig = RenderConfig()):
    """Writes ``output`` (MP4): the media file ``path`` with ``table``'s predictions drawn on it.

    Args:
      table: ``predict.predict_file``'s DataFrame for ``path`` (faces "main" or "all"), or any
        DataFrame of its form: indexed by ``time`` (step·i for frame i) or by (``track``, ``time``),
        with the label columns and, to draw face boxes, ``x, y, w, h`` (and ``face_found``).
      time_base: the time base the predictions were made on (``Predictor.time_base``).

    The video keeps the input's frame times and size as displayed (an odd side gets one more
    row or column); its audio is the input's (copied or re-encoded, see the module). Written
    atomically: DataError naming ``output`` when it cannot be written, the previous file kept.
    """
    painter(table, *config.size, time_base, config)  # a bad table fails before the output is opened

    def write(tmp):
        try:
            _write(tmp, path, table, time_base, config)
        except av.error.FFmpegError as e:
            if isinstance(e, OSError):  # the disk: write_atomically's message
                raise
            raise DataError(f"cannot render {path} to {output}: {type(e).__name__}: {e}") from e

    run_lib.write_atomically(output, write, DataError)
