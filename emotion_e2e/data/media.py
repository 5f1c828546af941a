"""Streaming audio/video decoding onto the 40 ms grid (docs/design.md §2).

Everything here decodes with PyAV and yields one grid frame at a time, so memory
is constant in the recording's length and the video's resolution: at most one
decoded video frame (plus its RGB copy) and a few FFmpeg audio frames are alive.

Audio time 0 is the first decoded sample; video time 0 is the video stream's
start time. Grid frame ``i = 1..N`` ends at ``time_base.frame_step · i``. Video frames come
out as they are meant to be displayed: turned and mirrored by the stream's display matrix
(a phone's "rotate 90°" flag), as FFmpeg's own player does.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import math
import os
import stat
from fractions import Fraction
from typing import Iterator, NamedTuple

import av
import numpy as np
from scipy import signal

from emotion_e2e.config import TimeBase
from emotion_e2e.errors import DataError, io_reason


# ---------------------------------------------------------------- resampling

def _factors(rate_in: int, rate_out: int) -> tuple[int, int]:
    if rate_in <= 0 or rate_out <= 0:
        raise ValueError(f"sample rates must be positive. Received: rate_in={rate_in}, rate_out={rate_out}")
    g = math.gcd(int(rate_in), int(rate_out))
    return int(rate_out) // g, int(rate_in) // g


def _lowpass(up: int, down: int) -> np.ndarray:
    # The exact filter resample_poly designs by default (Kaiser β=5, half-length
    # 10·max(up, down)); building it once lets every block reuse it.
    m = max(up, down)
    return signal.firwin(2 * 10 * m + 1, 1.0 / m, window=("kaiser", 5.0))


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(n,) signal at ``rate_in`` -> (ceil(n·rate_out/rate_in),) float32 at ``rate_out``."""
    up, down = _factors(rate_in, rate_out)
    x = np.asarray(x, dtype=np.float64)  # float64 so block-wise streaming matches to float32 rounding
    if up == down:
        return x.astype(np.float32)
    return signal.resample_poly(x, up, down).astype(np.float32)


class StreamingResampler:
    """Block-wise ``resample``: concatenated ``push``/``flush`` outputs equal the one-shot result.

    resample_poly's output k is centred on input position k·down/up and reads
    inputs within ±half_len/up of it. A block starting at an input index that is a
    multiple of ``down`` therefore produces the global outputs shifted by a whole
    number of samples; we emit only outputs whose whole support lies in the block
    (or, at ``flush``, whose support runs past the true end, where zeros are right).
    """

    def __init__(self, rate_in: int, rate_out: int):
        self.up, self.down = _factors(rate_in, rate_out)
        self._h = None if self.up == self.down else _lowpass(self.up, self.down)
        self._half = 0 if self._h is None else (len(self._h) - 1) // 2
        self._buf = np.zeros(0)  # input samples [start, start + len(buf))
        self._start = 0  # global input index of buf[0]; a multiple of down
        self._done = 0  # global outputs emitted so far

    def _run(self, n_out: int) -> np.ndarray:
        """Global outputs [done, n_out) from the buffer, then drop input no longer needed."""
        if n_out <= self._done:
            return np.zeros(0, np.float32)
        y = signal.resample_poly(self._buf, self.up, self.down, window=self._h)
        first = self._start // self.down * self.up  # global index of y[0]
        out = y[self._done - first:n_out - first].astype(np.float32)
        self._done = n_out
        # The next output reads inputs from ceil((done·down - half)/up) on.
        need = max(0, -(-(self._done * self.down - self._half) // self.up))
        drop = need // self.down * self.down - self._start
        if drop > 0:
            self._buf, self._start = self._buf[drop:], self._start + drop
        return out

    def push(self, chunk: np.ndarray) -> np.ndarray:
        """(m,) input samples -> (k,) float32 outputs that are final (k may be 0)."""
        chunk = np.asarray(chunk, dtype=np.float64).reshape(-1)
        if self._h is None:
            return chunk.astype(np.float32)
        self._buf = np.concatenate([self._buf, chunk])
        end = self._start + len(self._buf)
        # Output k is final once its last input, floor((k·down + half)/up), has arrived.
        return self._run(max(0, -(-(end * self.up - self._half) // self.down)))

    def flush(self) -> np.ndarray:
        """The remaining (k,) float32 outputs; total length ceil(n·up/down)."""
        if self._h is None:
            return np.zeros(0, np.float32)
        end = self._start + len(self._buf)
        return self._run(-(-end * self.up // self.down))


# ---------------------------------------------------------------- containers

# What a path that is not a regular file is (os.stat's mode), for the message.
_NOT_A_FILE = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _check_regular_file(path: str):
    """DataError naming ``path`` when it is missing or not a regular file (a directory, a FIFO...),
    told from its ``stat`` alone: a FIFO is never opened, which would block until a writer came."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: media file not found (expected an existing audio/video file)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read media: {io_reason(e)}") from e
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_A_FILE if test(mode)), "a special file")
        raise DataError(f"{path} is {kind}, not a media file (expected an audio/video file)")


@contextlib.contextmanager
def _open(path, kind: str | None = None):
    """Yield (container, first stream of ``kind``); every FFmpeg/OS failure becomes a DataError."""
    path = os.fspath(path)
    _check_regular_file(path)
    try:
        with av.open(path) as container:
            streams = getattr(container.streams, kind) if kind else None
            if kind and not streams:
                have = ", ".join(s.type for s in container.streams) or "none"
                raise DataError(f"{path}: expected an {kind} stream, the container has streams: {have}")
            yield container, streams[0] if kind else None
    except (av.error.FFmpegError, OSError) as e:
        raise DataError(f"{path}: cannot read media (expected a decodable audio/video container): "
                        f"{type(e).__name__}: {e}") from e


# FFmpeg demuxers that open files which are not recordings: 'tty' shows any text file as ANSI art,
# the image demuxers ('image2', 'png_pipe', 'jpeg_pipe', ...) a photo as one frame.
NOT_RECORDINGS = ("tty", "image2")
NOT_RECORDING_SUFFIX = "_pipe"


def is_recording(container_format: str) -> bool:
    """Whether FFmpeg's demuxer ``container_format`` (``probe``'s) reads a recording, not a text
    file or a still image."""
    return container_format not in NOT_RECORDINGS and not container_format.endswith(NOT_RECORDING_SUFFIX)


def probe(path) -> tuple[str, tuple[str, ...]]:
    """``(container format, stream kinds)`` of ``path``: FFmpeg's demuxer name (``'mov,mp4,...'``,
    ``'wav'``) and its streams' kinds in container order (``'audio'``, ``'video'``, ...), read from
    the header only; DataError when the file is missing or not a readable container."""
    with _open(path) as (container, _):
        return container.format.name, tuple(s.type for s in container.streams)


def stream_types(path) -> tuple[str, ...]:
    """The kinds of ``path``'s streams in container order (``probe``)."""
    return probe(path)[1]


def _decoded_audio(container, stream) -> Iterator[tuple[np.ndarray, int]]:
    """(channels, samples) float32 blocks at the native rate, with that rate."""
    conv = None
    for frame in container.decode(stream):
        if conv is None:
            # Output rate and layout fixed by the first frame: FFmpeg converts any
            # later format/layout/rate change, so the stream stays uniform.
            rate = frame.sample_rate
            conv = av.AudioResampler(format="fltp", layout=frame.layout.name, rate=rate)
        for out in conv.resample(frame):
            yield out.to_ndarray(), rate
    if conv is not None:
        for out in conv.resample(None):
            yield out.to_ndarray(), rate


def pad_frame(x: np.ndarray, spf: int) -> np.ndarray:
    """(<= spf,) samples -> (spf,) float32, zero-padded; clipped because resampling
    can overshoot full scale slightly."""
    out = np.zeros(spf, np.float32)
    out[:len(x)] = np.clip(x, -1.0, 1.0)
    return out


def exact_step(time_base: TimeBase) -> Fraction:
    """The frame step as an exact fraction of a second (0.04 -> exactly 1/25), so frame boundaries
    compare exactly with sample and frame times."""
    return Fraction(time_base.frame_step).limit_denominator(1_000_000)


def check_finite(path, block: np.ndarray, offset: int, rate: int, time_base: TimeBase):
    """DataError naming ``path``, the first NaN or infinite sample of ``block`` (channels, samples),
    whose first sample is the file's sample ``offset`` (0-based) at ``rate``, its time and the
    grid frame that holds it: frame i holds the samples from step·(i-1) up to step·i. Counting
    the others would mean decoding the rest of the file: the first one is named."""
    finite = np.isfinite(block).all(axis=0)
    if finite.all():
        return
    k = int(np.argmin(finite))
    index = offset + k
    step = exact_step(time_base)
    frame = int(Fraction(index, rate) // step) + 1
    value = block[:, k][~np.isfinite(block[:, k])][0]
    raise DataError(f"{path}: audio sample {index + 1} at {index / rate:.4f} s, in frame {frame}, is {value}: "
                    f"expected finite samples")


def audio_frames(path, time_base: TimeBase, num_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield (samples_per_frame,) float32 mono frames in [-1, 1] at ``time_base.sample_rate``.

    Frame i holds resampled samples [(i-1)·spf, i·spf). With ``num_frames=None``
    ceil(len/spf) frames (last zero-padded); else exactly ``num_frames``. A NaN or infinite
    sample is a DataError naming the file, the sample, its time and its frame; it is found
    before resampling, whose filter would spread it over its neighbours.
    """
    spf = time_base.samples_per_frame
    limit = math.inf if num_frames is None else num_frames
    emitted, carry, resampler = 0, np.zeros(0, np.float32), None  # carry: < spf samples + one block
    decoded = 0  # samples at the native rate so far
    with _open(path, "audio") as (container, stream):
        for block, rate in _decoded_audio(container, stream):
            check_finite(path, block, decoded, rate, time_base)
            decoded += block.shape[1]
            resampler = resampler or StreamingResampler(rate, time_base.sample_rate)
            carry = np.concatenate([carry, resampler.push(block.mean(axis=0))])
            whole = int(min(len(carry) // spf, limit - emitted))
            for k in range(whole):
                yield pad_frame(carry[k * spf:(k + 1) * spf], spf)
            carry, emitted = carry[whole * spf:], emitted + whole
            if emitted >= limit:
                return
        if resampler is None:
            raise DataError(f"{path}: the audio stream has no decodable samples (expected at least one)")
        carry = np.concatenate([carry, resampler.flush()])
    # The tail: whole frames, a zero-padded last one, then silence up to num_frames.
    total = emitted + -(-len(carry) // spf) if num_frames is None else num_frames
    for k in range(total - emitted):
        yield pad_frame(carry[k * spf:(k + 1) * spf], spf)


def audio_duration(path) -> float:
    """Seconds of audio: decoded samples at the native rate / that rate."""
    with _open(path, "audio") as (container, stream):
        n, rate = 0, None
        for frame in container.decode(stream):
            n, rate = n + frame.samples, rate or frame.sample_rate
    if not n:
        raise DataError(f"{path}: the audio stream has no decodable samples (expected at least one)")
    return n / rate


def stream_start(stream, first_pts: int) -> int:
    return stream.start_time if stream.start_time is not None else first_pts


def video_duration(path) -> float:
    """Seconds of video from the stream start to the end of its last frame (demux only)."""
    with _open(path, "video") as (container, stream):
        first, end, ok = None, None, True
        for packet in container.demux(stream):
            if packet.pts is None:
                ok = ok and packet.size == 0  # the empty flush packet is expected
                continue
            ok = ok and bool(packet.duration)
            stop = packet.pts + (packet.duration or 0)
            first = packet.pts if first is None else min(first, packet.pts)
            end = stop if end is None else max(end, stop)
        if ok and end is not None:
            return float((end - stream_start(stream, first)) * stream.time_base)
    # Packets without durations or timestamps: decode, extending the last frame by
    # the previous frame interval.
    times = collections.deque((t for t, *_ in _video_frames_timed(path)), maxlen=2)
    return float(times[-1] + (times[-1] - times[0] if len(times) > 1 else 0))


# A display matrix (FFmpeg's DISPLAYMATRIX side data: an MP4/MOV track header's matrix, or an
# H.264/HEVC display orientation message) is 9 native int32 ``a b u / c d v / tx ty w``: a..d, tx,
# ty in 16.16 fixed point, u, v, w in 2.30. A stored pixel (x, y) is shown at (a·x + c·y + tx,
# b·x + d·y + ty): a phone that held the camera upright writes a = d = 0, b = 1, c = -1 (stored
# column x becomes displayed row x: a clockwise quarter turn, FFmpeg's rotation angle -90°).
DISPLAY_ONE, DISPLAY_W_ONE = 1 << 16, 1 << 30


class Orientation(NamedTuple):
    """How a stored picture becomes the displayed one: transpose rows and columns first, then
    reverse the rows and/or the columns (the eight turns and mirror images of a rectangle)."""

    transpose: bool
    flip_rows: bool
    flip_cols: bool

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The displayed ``(H', W', 3)`` picture of a stored ``(H, W, 3)`` one (H', W' = W, H when
        transposed), contiguous: a clockwise quarter turn is ``np.rot90(rgb, -1)``."""
        if self.transpose:
            rgb = rgb.transpose(1, 0, 2)
        return np.ascontiguousarray(rgb[::-1 if self.flip_rows else 1, ::-1 if self.flip_cols else 1])


@functools.lru_cache(maxsize=16)
def _display_orientation(matrix: bytes) -> Orientation | None:
    """The ``Orientation`` of a display matrix (36 bytes), None for the identity (nothing to do).

    The same choice as FFmpeg's ``autorotate`` for the angles it turns without resampling.
    ValueError for any other matrix: a turn that is not a multiple of 90°, a scale, a shear or
    a perspective.
    """
    if len(matrix) != 9 * 4:
        raise ValueError(f"expected 9 int32 values (36 bytes), received {len(matrix)} bytes")
    m = np.frombuffer(matrix, np.int32).tolist()
    a, b, u, c, d, v, _, _, w = m
    unit = sorted(map(abs, (a, b, c, d))) == [0, 0, DISPLAY_ONE, DISPLAY_ONE] and (b == c == 0 or a == d == 0)
    if not unit or u or v or w != DISPLAY_W_ONE:
        scale = [DISPLAY_ONE, DISPLAY_ONE, DISPLAY_W_ONE] * 3
        shown = ", ".join(f"{x / s:.4g}" for x, s in zip(m, scale))
        raise ValueError(f"[{shown}] is not a rotation by a multiple of 90° (mirrored or not) "
                         f"without scale, shear or perspective")
    turn = Orientation(transpose=a == 0, flip_rows=(b if a == 0 else d) < 0, flip_cols=(c if a == 0 else a) < 0)
    return turn if any(turn) else None


def display_orientation(frame: av.VideoFrame, path, index: int) -> Orientation | None:
    """``frame``'s display ``Orientation`` (None when it is shown as stored)."""
    matrix = frame.side_data.get("DISPLAYMATRIX")
    if matrix is None:
        return None
    try:
        return _display_orientation(bytes(matrix))
    except ValueError as e:
        raise DataError(f"{path}: video frame {index} has an unsupported display matrix: {e}") from None


class FrameOrientation:
    """The display ``Orientation`` (or None) of each of a stream's frames, called on them in order.

    The display matrix is read whole (``frame.side_data``) from the first frame and again only
    where a frame's rotation angle (``frame.rotation``) differs from the last one read (a mirror
    image alone keeps the angle): PyAV's side data and its frame refer to each other, so every
    frame whose side data is read lives until Python's cyclic garbage collector runs, which in a
    process holding TensorFlow is rarely (a converter's memory grew by ~25 KB a frame, 140 MB in
    5 minutes of 720p).
    """

    def __init__(self, path):
        self.path, self.index, self.rotation, self.orientation = path, 0, None, None

    def __call__(self, frame: av.VideoFrame) -> Orientation | None:
        if frame.rotation != self.rotation:
            self.orientation, self.rotation = display_orientation(frame, self.path, self.index), frame.rotation
        self.index += 1
        return self.orientation


def _video_frames_timed(path) -> Iterator[tuple[Fraction, av.VideoFrame, Orientation | None]]:
    """(seconds since stream start as an exact Fraction, undecoded-to-RGB frame, its display
    ``Orientation`` or None)."""
    with _open(path, "video") as (container, stream):
        stream.thread_type = "AUTO"
        start, count, orient = None, 0, FrameOrientation(path)
        for frame in container.decode(stream):
            if frame.pts is None:
                raise DataError(f"{path}: video frame {count} has no timestamp (expected pts on every frame)")
            if start is None:
                start = stream_start(stream, frame.pts)
            count += 1
            yield (frame.pts - start) * stream.time_base, frame, orient(frame)
        if not count:
            raise DataError(f"{path}: the video stream has no decodable frames (expected at least one)")


def displayed(frame: av.VideoFrame, orientation: Orientation | None) -> np.ndarray:
    """``frame`` as (H, W, 3) uint8 RGB as displayed (turned by its ``orientation``)."""
    arr = frame.to_ndarray(format="rgb24")
    return arr if orientation is None else orientation.apply(arr)


def displayed_frames(path) -> Iterator[tuple[Fraction, np.ndarray]]:
    """Every decoded video frame of ``path``, in order, off the grid: ``(seconds since the stream
    start as an exact Fraction, (H, W, 3) uint8 RGB as displayed)``, a new writable array each."""
    for t, frame, orientation in _video_frames_timed(path):
        yield t, displayed(frame, orientation)


def video_frames(path, time_base: TimeBase, num_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB as displayed: for grid frame i, the last video frame with time <= step·i.

    Times before the first video frame get the first frame; past the end the last
    one is held. ``num_frames=None`` covers ``video_duration``. A repeated frame is
    the same read-only array. A frame with a display matrix is turned (and mirrored)
    as it is meant to be shown, so a phone's portrait video comes out upright: H and W
    are the displayed height and width.
    """
    n = time_base.frames_in(video_duration(path)) if num_frames is None else num_frames
    step = exact_step(time_base)
    held, rgb, i = None, None, 1

    def to_rgb(decoded):
        # Convert only frames that are yielded, once each (30 fps -> 25 Hz skips 1 in 6).
        nonlocal rgb
        frame, orientation = decoded
        if rgb is None or rgb[0] is not frame:
            arr = displayed(frame, orientation)
            arr.flags.writeable = False
            rgb = (frame, arr)
        return rgb[1]

    if n <= 0:
        return
    for t, *decoded in _video_frames_timed(path):
        while i <= n and t > step * i:
            yield to_rgb(held if held is not None else decoded)
            i += 1
        if i > n:
            return
        held = decoded
    while i <= n:
        yield to_rgb(held)
        i += 1
