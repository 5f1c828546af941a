"""Media files written with PyAV for the tests: content encodes time."""

from __future__ import annotations

import struct
from fractions import Fraction

import av
import numpy as np

from emotion_e2e.benchmark.media import encode as _encode

STEP = Fraction(1, 25)  # the default 40 ms grid


def write_audio(path, x, rate, codec="pcm_s16le", fmt="s16"):
    """x: (n,) mono or (n, 2) stereo float in [-1, 1]."""
    x = np.asarray(x, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    layout = "mono" if x.shape[1] == 1 else "stereo"
    scale, offset, dtype = {"s16": (32767, 0, np.int16), "s32": (2**31 - 1, 0, np.int32), "u8": (127, 128, np.uint8),
                            "flt": (1, 0, np.float32), "fltp": (1, 0, np.float32)}[fmt]
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate, layout=layout)
        block = 1024  # aac wants exactly frame_size samples per frame

        def frames():
            for i in range(0, len(x), block):
                part = x[i:i + block]
                if codec == "aac" and len(part) < block:
                    part = np.pad(part, ((0, block - len(part)), (0, 0)))
                arr = part * scale + offset
                arr = (np.round(arr) if np.issubdtype(dtype, np.integer) else arr).astype(dtype)
                arr = arr.T.copy() if fmt.endswith("p") else arr.reshape(1, -1)  # planar vs interleaved
                f = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
                f.sample_rate, f.pts = rate, i
                yield f

        _encode(c, s, frames())
    return str(path)


def colour(k):
    """Frame k's uniform RGB colour, robust to lossy YUV coding (levels 8 apart)."""
    return np.array([8 * (k % 32), 8 * (k // 32), 128], np.uint8)


def decode_k(img):
    r, g, _ = img[img.shape[0] // 2, img.shape[1] // 2].astype(int)
    return round(r / 8) + 32 * round(g / 8)


def write_video(path, pts, time_base, codec="png", pix_fmt="rgb24", size=(48, 64)):
    """Frame k has timestamp pts[k]·time_base and colour(k); returns the path."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=1 / time_base)  # codec time base = the pts unit: no rounding
        s.height, s.width = size
        s.pix_fmt = pix_fmt
        if codec == "libx264":
            s.options = {"qp": "0", "bf": "2"}

        def frames():
            for k, p in enumerate(pts):
                f = av.VideoFrame.from_ndarray(np.broadcast_to(colour(k), size + (3,)).copy(), format="rgb24")
                f.pts, f.time_base = p, time_base
                yield f

        _encode(c, s, frames())
    return str(path)


def sine(freq, n, rate, amp=0.5):
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / rate)


def dominant(x, rate):
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.argmax(spec) * rate / len(x)


def stepped_tone(rate, segments):
    """Segment k (0-based) lasts one grid step and has frequency 500 + 250 k."""
    seg = int(rate * STEP)
    return np.concatenate([sine(500 + 250 * k, seg, rate) for k in range(segments)])




def write_av(path, frames, fps, audio=None, audio_rate=44100, video_codec="libx264"):
    """An MP4/MOV with ``frames`` (RGB uint8 arrays) at ``fps`` (a Fraction) and an optional
    mono AAC track ``audio`` (float in [-1, 1]). H.264 at qp 0 in 4:4:4 keeps colours within ±2."""
    time_base = 1 / Fraction(fps)
    with av.open(str(path), "w") as c:
        v = c.add_stream(video_codec, rate=Fraction(fps))
        v.height, v.width = frames[0].shape[:2]
        if video_codec == "libx264":
            v.pix_fmt, v.options = "yuv444p", {"qp": "0"}
        a = c.add_stream("aac", rate=audio_rate, layout="mono") if audio is not None else None
        video_frames = []
        for k, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = k, time_base
            video_frames.append(f)
        _encode(c, v, video_frames)
        if a is not None:
            block = 1024
            x = np.pad(np.asarray(audio, np.float32), (0, -len(audio) % block))
            audio_frames = []
            for i in range(0, len(x), block):
                f = av.AudioFrame.from_ndarray(x[None, i:i + block], format="fltp", layout="mono")
                f.sample_rate, f.pts = audio_rate, i
                audio_frames.append(f)
            _encode(c, a, audio_frames)
    return str(path)


# ------------------------------------------------------------------ display matrix (a phone's rotation flag)

def _boxes(data, start, end):
    """``(type, start, end)`` of the ISO BMFF boxes in ``data[start:end]``."""
    while start + 8 <= end:
        size, kind = struct.unpack(">I4s", data[start:start + 8])
        if size == 1:  # a 64-bit size follows the type
            size = struct.unpack(">Q", data[start + 8:start + 16])[0]
        size = size or end - start  # 0: to the end
        yield kind, start, start + size
        start += size


def _child(data, start, end, kind):
    """``(start, end)`` of the first ``kind`` box among the boxes in ``data[start:end]``."""
    return next((s, e) for k, s, e in _boxes(data, start, end) if k == kind)


def set_display_matrix(path, matrix):
    """Writes ``matrix`` (9 ints ``a b u c d v tx ty w``: 16.16 fixed point, u, v, w 2.30) into the
    track header (``tkhd``) of the MP4/MOV's video track, where a phone writes its rotation flag;
    FFmpeg's mov demuxer turns it into the stream's display matrix. Returns the path."""
    data = bytearray(open(path, "rb").read())
    patched = 0
    moov = _child(data, 0, len(data), b"moov")
    for kind, start, end in _boxes(data, moov[0] + 8, moov[1]):
        if kind != b"trak":
            continue
        mdia = _child(data, start + 8, end, b"mdia")
        hdlr = _child(data, mdia[0] + 8, mdia[1], b"hdlr")
        if data[hdlr[0] + 16:hdlr[0] + 20] != b"vide":  # size, type, version+flags, pre_defined, handler
            continue
        tkhd = _child(data, start + 8, end, b"tkhd")[0] + 8
        times = 32 if data[tkhd] == 1 else 20  # version 1: 64-bit times and duration
        # version+flags, times+track id+duration, 8 reserved, layer, group, volume, 2 reserved
        at = tkhd + 4 + times + 8 + 8
        data[at:at + 36] = struct.pack(">9i", *matrix)
        patched += 1
    assert patched == 1, f"{path}: expected one video track, patched {patched}"
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def phone_matrix(degrees, height, width):
    """The track matrix a phone writes for a ``(height, width)`` stored picture that is to be shown
    turned ``degrees`` (0, 90, 180, 270) clockwise, its "rotate" tag: stored pixel (x, y) is shown
    at (a·x + c·y + tx, b·x + d·y + ty), a = d = cos, b = -c = sin, and (tx, ty) moves the turned
    picture back to the origin."""
    cos, sin = {0: (1, 0), 90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    tx, ty = {0: (0, 0), 90: (height, 0), 180: (width, height), 270: (0, width)}[degrees]
    one = 1 << 16
    return [cos * one, sin * one, 0, -sin * one, cos * one, 0, tx * one, ty * one, 1 << 30]


def write_phone_video(path, upright, degrees, fps=25):
    """An MP4 (``write_av``) as a phone writes one held sideways or upside down: the stored frames are
    ``upright`` (RGB arrays) turned ``degrees`` counter-clockwise, and the track says "turn them
    ``degrees`` clockwise to show them". Returns the path."""
    stored = [np.ascontiguousarray(np.rot90(img, degrees // 90)) for img in upright]
    write_av(path, stored, fps)
    return set_display_matrix(path, phone_matrix(degrees, *stored[0].shape[:2]))

