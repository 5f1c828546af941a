"""Recordings the benchmark suites run on, written with PyAV, and the peak memory of a command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

# The astronaut's head inside a 300×300 window of scikit-image's 512×512 photo (x, y, side), as
# tests/data/face_fixtures.py cuts it.
ASTRONAUT_WINDOW = (60, 0, 300)


def encode(container, stream, items):
    """Encodes and muxes ``items`` (PyAV frames) into ``stream``, then flushes the encoder."""
    for item in items:
        for packet in stream.encode(item):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_h264(path: str, frames, fps, size, crf: int, audio_blocks=None, audio_rate: int = 48000,
               audio_layout: str = "mono") -> str:
    """Encodes a recording frame by frame, never holding it whole: ``frames`` yields RGB uint8
    ``size + (3,)`` arrays (H.264, 4:2:0, ultrafast preset at ``crf``, ``fps`` frames/s);
    ``audio_blocks`` optionally yields float32 ``(channels, n)`` blocks for an AAC track."""
    import av  # noqa: PLC0415

    def video_frames():
        for k, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = k
            yield f

    def audio_frames():
        start = 0
        for block in audio_blocks:
            f = av.AudioFrame.from_ndarray(np.ascontiguousarray(block, np.float32), format="fltp",
                                           layout=audio_layout)
            f.sample_rate, f.pts = audio_rate, start
            start += block.shape[1]
            yield f

    with av.open(path, "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.height, v.width, v.pix_fmt = size[0], size[1], "yuv420p"
        v.options = {"preset": "ultrafast", "crf": str(crf)}
        a = c.add_stream("aac", rate=audio_rate, layout=audio_layout) if audio_blocks is not None else None
        encode(c, v, video_frames())
        if a is not None:
            encode(c, a, audio_frames())
    return path



# A panel of three people side by side (an interview, a meeting): the astronaut's head from
# ASTRONAUT_WINDOW scaled to these window sides (faces of about 0.3 × the side), the second mirrored
# and the third recoloured so that no two look alike, each swaying around its third of the frame.
PANEL_PEOPLE = ((420, False, (1.0, 1.0, 1.0)), (360, True, (1.0, 0.85, 1.2)), (320, False, (1.2, 1.0, 0.8)))
PANEL_SWAY = 80  # pixels each head moves left and right of its place


def sine_speech(seconds: float, rate: int, block: int):
    """Stereo float32 ``(2, block)`` blocks of a 220 Hz tone, ``seconds`` long."""
    t = np.arange(block) / rate
    for i in range(0, int(seconds * rate), block):
        x = (0.3 * np.sin(2 * np.pi * 220 * (t + i / rate))).astype(np.float32)
        yield np.stack([x, x])


def face_video(path: str, seconds: float, size=(720, 1280), fps=30, people: int = 1):
    """A 1280×720 H.264 + AAC recording with real faces (scikit-image's astronaut) moving slowly:
    one close-up (a face of ~180 px) or, with ``people`` up to 3, the first ``PANEL_PEOPLE``
    side by side."""
    from skimage.data import astronaut  # noqa: PLC0415 - the test extra

    import cv2  # noqa: PLC0415

    rate, block = 48000, 1024
    base = np.full(size + (3,), 70, np.uint8)
    if people == 1:
        heads = [(cv2.resize(astronaut()[0:300, 60:360], (600, 600)), 340, 60, 240)]  # image, x, y, sway
    else:
        x, y, side = ASTRONAUT_WINDOW
        window = astronaut()[y:y + side, x:x + side]
        heads = []
        for k, (px, mirror, tint) in enumerate(PANEL_PEOPLE[:people]):
            img = cv2.resize(window[:, ::-1] if mirror else window, (px, px), interpolation=cv2.INTER_AREA)
            img = np.clip(img * np.asarray(tint), 0, 255).astype(np.uint8)
            centre = size[1] * (2 * k + 1) // (2 * people)
            heads.append((img, centre - px // 2, (size[0] - px) // 2, PANEL_SWAY))

    def frames():
        for k in range(int(seconds * fps)):
            img = base.copy()
            for j, (head, x0, y0, sway) in enumerate(heads):
                x = min(max(x0 + int(sway * np.sin(k / 90 + 2 * j)), 0), size[1] - head.shape[1])
                img[y0:y0 + head.shape[0], x:x + head.shape[1]] = head
            yield img

    write_h264(path, frames(), fps, size, crf=28, audio_blocks=sine_speech(seconds, rate, block), audio_rate=rate,
               audio_layout="stereo")



# Measured directly, a child's ru_maxrss is at least its parent's peak: Linux carries the peak
# of the memory a process had before exec (its parent's, copied or shared by fork and vfork)
# into the new program's maxrss. A launcher that has imported nothing keeps that floor at ~30 MB.
_LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL); "
             "_, status, usage = os.wait4(p.pid, 0); print(usage.ru_maxrss); "
             "sys.exit(os.waitstatus_to_exitcode(status))")


def peak_rss_mb(argv: list[str], **kwargs) -> float:
    """Peak resident memory in MB of the command ``argv`` (``subprocess.run`` keyword arguments
    such as ``env`` and ``cwd`` pass through); RuntimeError with its stderr when it fails."""
    r = subprocess.run([sys.executable, "-c", _LAUNCHER, *argv], capture_output=True, text=True, **kwargs)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr[-3000:]}")
    return int(r.stdout.split()[-1]) / 1024

