r"""Benchmarks that print figures (never a pass/fail test).

  python -m emotion_e2e.benchmark              # everything
  python -m emotion_e2e.benchmark --suite=data

models: for the full-size models (audio-only, batch 2 × 150 frames; audio+face with
ResNet-50, batch 1 × 25 frames) inference and train step in fp32 and bf16, in rounds
interleaved with this machine's matmul peak: frames/s, × real time, % of the matmul peak
measured in the same round counting the model's FLOPs (medians over the rounds), the bf16
train step's speed-up over fp32, and where each train step's time goes
(``train_step_breakdown``: kernel time by op type and by layer, forward and backward); for the
audio model, its LSTM stack alone, forward and forward + backward (``lstm_seconds``).
"inf. opt." is inference
of ``models.inference.optimize_for_inference(model)`` (batch norms folded into the convolutions,
LSTM input projections hoisted out of the recurrence; same outputs up to fp32 rounding).

data: reader throughput on the demo corpus (frames/s; targets: audio+face with
augmentation >= 5,000, audio-only >= 50,000 on 2 cores), the resampler comparison
behind the choice of scipy's polyphase filter, and peak resident memory of the
converter on 1- and 5-minute 1280×720 recordings (it must not grow with length).

faces: the share of frames in which each face detector finds a real face (scikit-image's
astronaut on a flat dark background, H.264-coded and decoded like any recording), by face
height (1/10 to 1/2 of the frame height) and resolution (640×480, 1280×720), and ms per
frame; the configurations shipped before (MediaPipe's short-range model, Haar at 320 px),
YuNet at 320 px and short-range-then-full-range MediaPipe for comparison; what each
detector adds to an install (model file, cascade, or MediaPipe's dependency tree) on disk; and
the cost per frame of face tracks (detection and tracking) on a 1280×720 talk with one face and
a panel of three, for several ``detect_every`` (1: the whole frame searched on every frame),
with the share of frames searched whole.

serving: ``emotion_e2e.predict`` with the demo's face and audio+face models (resnet10) and the
paper's audio, face and audio+face models (ResNet-50), random weights, on a 1280×720 30 fps
H.264 + AAC recording with a real face, and ``--faces=all`` on a panel of three people: × real
time of each stage (decode: PyAV decoding, resampling and frame selection alone; faces:
detection with the default detector, tracking, crops and the JPEG round trip; model: the stream
signature in chunks, once per person); predict on a live source (an MPEG-TS, and a WAV for
the audio model, fed through a named pipe at its own pace): p50/p95 of the delay from a chunk's
last frame entering the pipe to its rows in the CSV, at 0.5 s and 1 s chunks
and of the whole file, the latency of one 1-second stream call, and the peak resident memory
of the predict CLI on 1- and 5-minute recordings (it must not grow with length).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from absl import app, flags

_SUITE = flags.DEFINE_enum("suite", "all", ["all", "data", "faces", "models", "serving"],
                           "Which benchmarks to run.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "models: timed calls per model, mode and round (after a warm-up).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "models: rounds of peak and model timings, interleaved.")
_RECORDS = flags.DEFINE_string("records", None, "A converted demo corpus (default: convert one into a temp dir).")
_BATCHES = flags.DEFINE_integer("batches", 40, "Batches timed per reader configuration.")
_MINUTES = flags.DEFINE_list("memory_minutes", ["1", "5"], "Lengths of the converter memory runs (minutes).")
_FACE_FRAMES = flags.DEFINE_integer("face_frames", 25, "Frames per face size and resolution in the faces suite.")
_TRACKING_SECONDS = flags.DEFINE_float("tracking_seconds", 10, "faces: seconds of each clip the tracking cost is timed on.")
_SERVING_SECONDS = flags.DEFINE_float("serving_seconds", 60, "serving: seconds of the recording timed per stage.")
_LIVE_SECONDS = flags.DEFINE_float("live_seconds", 20, "serving: seconds of the stream fed to each live latency run.")
_SERVING_MINUTES = flags.DEFINE_list("serving_memory_minutes", ["1", "5"],
                                     "serving: lengths of the predict CLI memory runs (minutes).")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reader_throughput(records_dir: str, batches: int) -> list[tuple[str, float]]:
    """Frames/s of the training (and eval) pipelines, after a warm-up."""
    from emotion_e2e.config import InputConfig, ReaderConfig  # noqa: PLC0415
    from emotion_e2e.data import reader, schema  # noqa: PLC0415

    pattern = schema.partition_pattern(records_dir, "train")
    cases = [("audio only, train", ("audio",), True),
             ("face only, eval (no augmentation)", ("face",), False),
             ("face only, train + augmentation", ("face",), True),
             ("audio+face, train + augmentation", ("audio", "face"), True)]
    rows = []
    for name, modalities, training in cases:
        ds = reader.make_dataset(pattern, InputConfig(modalities=modalities), ReaderConfig(), training=training,
                                 repeat=True, seed=0)
        it = iter(ds)
        for _ in range(5):
            next(it)
        t0, frames = time.perf_counter(), 0
        for _ in range(batches):
            frames += int(next(it)["mask"].numpy().sum())
        rows.append((name, frames / (time.perf_counter() - t0)))
    return rows


def write_h264(path: str, frames, fps, size, crf: int, audio_blocks=None, audio_rate: int = 48000,
               audio_layout: str = "mono") -> str:
    """Encodes a recording frame by frame, never holding it whole: ``frames`` yields RGB uint8
    ``size + (3,)`` arrays (H.264, 4:2:0, ultrafast preset at ``crf``, ``fps`` frames/s);
    ``audio_blocks`` optionally yields float32 ``(channels, n)`` blocks for an AAC track."""
    import av  # noqa: PLC0415

    def encode(container, stream, items):
        for item in items:
            for packet in stream.encode(item):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)

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


def _sine_speech(seconds: float, rate: int, block: int):
    """Stereo float32 ``(2, block)`` blocks of a 220 Hz tone, ``seconds`` long."""
    t = np.arange(block) / rate
    for i in range(0, int(seconds * rate), block):
        x = (0.3 * np.sin(2 * np.pi * 220 * (t + i / rate))).astype(np.float32)
        yield np.stack([x, x])


def _face_video(path: str, seconds: float, size=(720, 1280), fps=30, people: int = 1):
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

    write_h264(path, frames(), fps, size, crf=28, audio_blocks=_sine_speech(seconds, rate, block), audio_rate=rate,
               audio_layout="stereo")


# Run in a small process that spawns the measured command and reports its os.wait4 ru_maxrss.
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


def converter_memory(minutes: list[float], workdir: str) -> list[tuple[float, float, float]]:
    """``(minutes, peak RSS MB, frames/s)`` of ``prepare --source=manifest`` on one recording."""
    rows = []
    for m in minutes:
        d = os.path.join(workdir, f"mem_{m:g}min")
        os.makedirs(d, exist_ok=True)
        video = os.path.join(d, "rec.mp4")
        _face_video(video, 60 * m)
        with open(os.path.join(d, "manifest.csv"), "w") as f:
            f.write(f"recording_id,partition,audio,video,labels\nrec,test,,{video},\n")
        t0 = time.perf_counter()
        peak = peak_rss_mb([sys.executable, "-m", "emotion_e2e.prepare", "--source=manifest",
                            f"--input={d}/manifest.csv", f"--output_dir={d}/out"], env=dict(os.environ, CI="true"))
        rows.append((m, peak, 60 * m * 25 / (time.perf_counter() - t0)))
    return rows


# ---------------------------------------------------------------- resamplers

def compare_resamplers(seconds: float = 10.0) -> dict:
    """Speed and accuracy of scipy polyphase vs ``tensorflow_io.audio.resample``.

    Returns {method: {"44100->16000"/"48000->16000": {"sec_per_audio_sec",
    "amp_err" (relative), "freq_err_hz", "delay_out_samples", "snr_db",
    "snr_db_delay_aligned", "len_out"}}} for a 1 kHz, 0.5-amplitude sine; SNR is
    against the analytic 16 kHz sine with 10 % of each edge excluded.
    """
    import tensorflow as tf  # noqa: PLC0415
    import tensorflow_io as tfio  # noqa: PLC0415

    from emotion_e2e.data.media import resample  # noqa: PLC0415

    out_rate, f0, amp = 16000, 1000.0, 0.5
    methods = {
        "scipy_resample_poly": lambda x, r: resample(x, r, out_rate),
        "scipy_streaming_4096": lambda x, r: _stream_all(x, r, out_rate, 4096),
        "tfio_audio_resample": lambda x, r: tfio.audio.resample(tf.constant(x), r, out_rate).numpy(),
    }
    report = {}
    for name, fn in methods.items():
        report[name] = {}
        for rate in (44100, 48000):
            x = (amp * np.sin(2 * np.pi * f0 * np.arange(int(seconds * rate)) / rate)).astype(np.float32)
            fn(x[:rate], rate)  # warm-up (TF op loading, filter design)
            wall = []
            for _ in range(3):  # best of 3: the least disturbed run
                t0 = time.perf_counter()
                y = np.asarray(fn(x, rate), np.float64).reshape(-1)
                wall.append(time.perf_counter() - t0)
            n = np.arange(len(y))
            mid = slice(len(y) // 10, len(y) - len(y) // 10)
            ref = amp * np.sin(2 * np.pi * f0 * n / out_rate)
            # Least-squares sine fits on the middle part: amplitude, phase (-> delay
            # against the analytic sine) and frequency (phase drift between halves).
            a, f, phase = _fit_sine(y[mid], n[mid], out_rate, f0)
            delay = -phase / (2 * np.pi * f0) * out_rate
            shifted = amp * np.sin(2 * np.pi * f0 * (n - delay) / out_rate)
            report[name][f"{rate}->{out_rate}"] = {
                "sec_per_audio_sec": min(wall) / seconds,
                "amp_err": abs(a - amp) / amp,
                "freq_err_hz": abs(f - f0),
                "delay_out_samples": delay,
                "snr_db": _snr(ref[mid], y[mid]),
                "snr_db_delay_aligned": _snr(shifted[mid], y[mid]),
                "len_out": len(y),
            }
    return report


def _stream_all(x, rate_in, rate_out, chunk):
    from emotion_e2e.data.media import StreamingResampler  # noqa: PLC0415

    r = StreamingResampler(rate_in, rate_out)
    return np.concatenate([r.push(x[i:i + chunk]) for i in range(0, len(x), chunk)] + [r.flush()])


def _snr(ref, y):
    return float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((y - ref) ** 2), 1e-30)))


def _fit_sine(y, n, rate, f_guess):
    """(amplitude, frequency, phase φ) of y ≈ a·sin(2πf n/rate + φ), refined around f_guess."""
    def fit(yy, nn):
        w = 2 * np.pi * f_guess * nn / rate
        (c, s), *_ = np.linalg.lstsq(np.stack([np.sin(w), np.cos(w)], 1), yy, rcond=None)
        return np.hypot(c, s), np.arctan2(s, c)
    h = len(y) // 2
    a, phase = fit(y, n)
    (_, p1), (_, p2) = fit(y[:h], n[:h]), fit(y[h:], n[h:])
    dphi = (p2 - p1 + np.pi) % (2 * np.pi) - np.pi
    return a, f_guess + dphi * rate / (2 * np.pi * (n[h] - n[0])), phase


def data_suite():
    from emotion_e2e.config import FaceConfig  # noqa: PLC0415
    from emotion_e2e.data import convert, demo, sources  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        records = _RECORDS.value
        if not records:
            records = os.path.join(tmp, "demo")
            t0 = time.perf_counter()
            convert.convert(sources.demo_recordings(demo.DemoConfig()), convert.ConvertConfig(), records,
                            workers=2, source="demo")
            print(f"demo corpus converted in {time.perf_counter() - t0:.1f} s (2 workers)")
        rss0 = _rss_mb()
        print("\nreader throughput (demo train partition, seq_len 150, batch 2):")
        for name, fps in reader_throughput(records, _BATCHES.value):
            print(f"  {name:<38} {fps:>10,.0f} frames/s  ({fps * 0.04:,.0f}× real time)")
        print(f"  reader process peak RSS: {_rss_mb():.0f} MB (before reading: {rss0:.0f} MB)")

        print("\nresampling to 16 kHz (seconds of CPU per second of audio; 1 kHz sine):")
        for method, pairs in compare_resamplers().items():
            for pair, r in pairs.items():
                print(f"  {method:<22} {pair:<13} {r['sec_per_audio_sec'] * 1e3:7.3f} ms/s  "
                      f"amplitude error {r['amp_err'] * 100:.3f} %  delay {r['delay_out_samples']:+.3f} samples  "
                      f"SNR {r['snr_db']:.1f} dB")

        print(f"\nconverter peak memory, one 1280×720 30 fps H.264 + 48 kHz AAC recording, "
              f"{FaceConfig().detector} detector (the default):")
        for m, rss, fps in converter_memory([float(x) for x in _MINUTES.value], tmp):
            print(f"  {m:g} min: peak RSS {rss:,.0f} MB, {fps:,.0f} frames/s ({fps * 0.04:.2f}× real time)")


# ------------------------------------------------------------------ faces

FACE_FRACTIONS = (1 / 10, 1 / 8, 1 / 5, 1 / 3, 1 / 2)  # face height / frame height
FACE_RESOLUTIONS = ((480, 640), (720, 1280))  # (height, width)
# The astronaut's hand-labelled face (eyebrows to chin) inside a 300×300 window of the photo
# (as tests/data/face_fixtures.py), and the flat dark grey she is pasted on.
ASTRONAUT_WINDOW = (60, 0, 300)  # x, y, side in the 512×512 photo
WINDOW_FACE = (120, 75, 90, 90)  # x, y, w, h in the window
FACE_BACKGROUND = 30
FACE_CRF = 28  # H.264 quality of an ordinary webcam recording (yuv420p)
FACE_MATCH_IOU = 0.5  # a box counts as found when it overlaps the known face this much
# The face box stays this many face heights away from the frame's edges: the whole head is in
# the picture, as in a webcam or interview framing (a face cut by the edge is another test).
FACE_HEADROOM = 0.25
# Radians per frame in x and y of the face's path: a Lissajous figure that sweeps the whole
# frame without repeating a position within a few hundred frames.
FACE_PATH_STEPS = (0.37, 0.23)


def _portrait(window, fraction, height, width, at):
    """``(frame, face box)``: ``window`` scaled so the face is ``fraction`` × ``height`` tall, its face
    box at ``at`` (0..1 of the room left in x and y inside the ``FACE_HEADROOM`` margin) of a
    ``(height, width, 3)`` dark frame."""
    import cv2  # noqa: PLC0415

    from emotion_e2e.data.faces import Box  # noqa: PLC0415

    fx0, fy0, fw0, fh0 = WINDOW_FACE
    scale = fraction * height / fh0
    side = round(window.shape[0] * scale)
    patch = cv2.resize(window, (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fw, fh = round(fw0 * scale), round(fh0 * scale)
    margin = round(FACE_HEADROOM * fh)
    fx = margin + round(at[0] * (width - fw - 2 * margin))
    fy = margin + round(at[1] * (height - fh - 2 * margin))
    x, y = fx - round(fx0 * scale), fy - round(fy0 * scale)
    frame = np.full((height, width, 3), FACE_BACKGROUND, np.uint8)
    xa, ya, xb, yb = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    frame[ya:yb, xa:xb] = patch[ya - y:yb - y, xa - x:xb - x]
    return frame, Box(fx, fy, fw, fh)


def _portrait_video(path, fraction, height, width, frames):
    """Writes a 25 fps ``(height, width)`` H.264 video whose face moves over the whole frame;
    returns its ``frames`` face boxes.

    Video frame 0 is a lead-in without a face: grid frame ``i`` (``media.video_frames``) shows
    video frame ``i``, so the ``frames`` decoded grid frames match the returned boxes in order.
    """
    from skimage.data import astronaut  # noqa: PLC0415 - the test extra

    x, y, side = ASTRONAUT_WINDOW
    window = np.ascontiguousarray(astronaut()[y:y + side, x:x + side])
    wx, wy = FACE_PATH_STEPS
    shots = [_portrait(window, fraction, height, width, (0.5 + 0.5 * np.sin(wx * k), 0.5 + 0.5 * np.cos(wy * k)))
             for k in range(frames)]
    lead_in = np.full((height, width, 3), FACE_BACKGROUND, np.uint8)
    write_h264(path, [lead_in] + [f for f, _ in shots], 25, (height, width), crf=FACE_CRF)
    return [box for _, box in shots]


class _ShortThenFull:
    """MediaPipe's short-range model, and the full-range one only where it finds nothing (each
    searching its square tiles as it would alone)."""

    def __init__(self, short, full):
        self.short, self.full = short, full

    def detect(self, rgb):
        box = self.short.detect(rgb)
        return box if box is not None else self.full.detect(rgb)


def face_detection(frames: int, workdir: str) -> list[tuple[str, str, list[float], float, float]]:
    """``(detector, resolution, found ratio per FACE_FRACTIONS, ms per frame with a face, ms per
    frame without one)`` rows. A frame without a face costs more: every fallback runs."""
    import cv2  # noqa: PLC0415
    from skimage.data import coffee  # noqa: PLC0415 - the test extra: a cup on a table, no face

    from emotion_e2e.config import FaceConfig, TimeBase  # noqa: PLC0415
    from emotion_e2e.data import faces, media  # noqa: PLC0415
    from emotion_e2e.data.tracking import iou  # noqa: PLC0415

    cfg = FaceConfig()
    short = faces.MediaPipeDetector(cfg, model_selection=faces.MEDIAPIPE_SHORT_RANGE)
    full = faces.MediaPipeDetector(cfg)
    detectors = [
        ("yunet", faces.YuNetDetector(cfg)),
        ("yunet, detect_max_side=320", faces.YuNetDetector(FaceConfig(detect_max_side=320))),
        ("haar", faces.HaarDetector(cfg)),
        ("haar, detect_max_side=320", faces.HaarDetector(FaceConfig(detect_max_side=320))),
        ("mediapipe (full-range)", full),
        ("mediapipe short-range", short),
        ("mediapipe short, then full", _ShortThenFull(short, full)),
    ]
    found = {(name, size, fraction): 0 for name, _ in detectors for size in FACE_RESOLUTIONS
             for fraction in FACE_FRACTIONS}
    seconds = {(name, size): 0.0 for name, _ in detectors for size in FACE_RESOLUTIONS}
    for size in FACE_RESOLUTIONS:
        for fraction in FACE_FRACTIONS:  # one video in memory at a time
            path = os.path.join(workdir, f"portrait_{size[1]}x{size[0]}_{fraction:.3f}.mp4")
            boxes = _portrait_video(path, fraction, *size, frames)
            decoded = list(media.video_frames(path, TimeBase(), frames))
            for name, det in detectors:
                for frame, face in zip(decoded, boxes, strict=True):
                    t0 = time.perf_counter()
                    box = det.detect(frame)
                    seconds[name, size] += time.perf_counter() - t0
                    found[name, size, fraction] += box is not None and iou(box, face) > FACE_MATCH_IOU
    rows = []
    for name, det in detectors:
        for size in FACE_RESOLUTIONS:
            empty = cv2.resize(coffee(), size[::-1], interpolation=cv2.INTER_LINEAR)
            t0 = time.perf_counter()
            for _ in range(frames):
                det.detect(empty)
            rows.append((name, f"{size[1]}×{size[0]}", [found[name, size, f] / frames for f in FACE_FRACTIONS],
                         1e3 * seconds[name, size] / (frames * len(FACE_FRACTIONS)),
                         1e3 * (time.perf_counter() - t0) / frames))
    short.close()
    full.close()
    return rows


def tracking_cost(seconds: float, workdir: str, detect_every=(1, 3, 5, 10)) -> list[tuple]:
    """``(clip, detector, detect_every, ms per frame, full-detection share, tracks)`` rows: the
    default detector and Haar linking faces into tracks (``tracking.track_faces``) on ``seconds``
    of the 1280×720 talk (one face) and of the three-person panel, decoded beforehand (decoding
    is not counted), for each ``detect_every``; 1 is today's per-frame detection plus the
    association."""
    from emotion_e2e.config import FaceConfig, TimeBase, TrackConfig  # noqa: PLC0415
    from emotion_e2e.data import media, sources, tracking  # noqa: PLC0415

    rows = []
    for clip, people in (("talk, 1 face", 1), ("panel, 3 faces", 3)):
        path = os.path.join(workdir, f"tracking_{people}.mp4")
        _face_video(path, seconds, people=people)
        decoded = list(media.video_frames(path, TimeBase(), TimeBase().frames_in(seconds)))
        for name in (FaceConfig().detector, "haar"):
            for every in detect_every:
                cfg = FaceConfig(detector=name, track=TrackConfig(detect_every=every))
                detector = sources.detector(cfg)
                t0 = time.perf_counter()
                result = tracking.track_faces(lambda: iter(decoded), detector, cfg, clip)
                ms = 1e3 * (time.perf_counter() - t0) / len(decoded)
                rows.append((clip, name, every, ms, result.full_detection_share, len(result.tracks)))
    return rows


def installed_bytes(names) -> int:
    """Bytes on disk of the installed distributions ``names`` (every file their RECORD lists)."""
    import importlib.metadata  # noqa: PLC0415

    total = 0
    for name in names:
        for f in importlib.metadata.distribution(name).files or ():
            path = f.locate()
            total += path.stat().st_size if path.is_file() else 0
    return total


def dependency_tree(names) -> set[str]:
    """The installed distributions ``names`` and everything they require, transitively (extras
    not asked for left out), by canonical name."""
    import importlib.metadata  # noqa: PLC0415

    from packaging.requirements import Requirement  # noqa: PLC0415 - TensorFlow's dependency
    from packaging.utils import canonicalize_name  # noqa: PLC0415

    seen, todo = set(), list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:  # a requirement its markers leave out here
            continue
        seen.add(name)
        for line in dist.requires or ():
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def detector_install_sizes() -> list[tuple[str, str]]:
    """``(detector, what it adds to an install)``: the model file for YuNet and the cascade for
    Haar (both run on OpenCV, which the core install has anyway), and for MediaPipe the
    distributions its tree adds to the core install's, measured in this environment."""
    import cv2  # noqa: PLC0415

    from emotion_e2e.data import faces  # noqa: PLC0415

    mb = 2 ** 20
    core = dependency_tree(["emotion_e2e"])
    opencv = installed_bytes(["opencv-python-headless"]) / mb
    added = sorted(dependency_tree(["mediapipe"]) - core)
    sizes = sorted(((installed_bytes([n]) / mb, n) for n in added), reverse=True)
    cascade = os.path.getsize(os.path.join(cv2.data.haarcascades, faces.HAAR_CASCADE)) / mb
    model = len(faces.model_file(faces.YUNET_MODEL).read_bytes()) / mb
    return [("yunet", f"{model:.2f} MB model file in this package (OpenCV's DNN module, in the core install's "
                      f"opencv-python-headless, {opencv:.0f} MB, runs it)"),
            ("haar", f"{cascade:.2f} MB cascade inside opencv-python-headless (core install)"),
            ("mediapipe", f"{sum(s for s, _ in sizes):,.0f} MB in {len(sizes)} distributions the core install does "
                          "not have: " + ", ".join(f"{n} {s:,.0f}" for s, n in sizes) + " MB")]


def faces_suite():
    print(f"\nface detection: share of frames where the astronaut's face is found (IoU > {FACE_MATCH_IOU}), "
          f"flat dark background, {_FACE_FRAMES.value} frames per size, H.264 crf {FACE_CRF}; columns: face height "
          f"/ frame height")
    sizes = "".join(f"{f'1/{round(1 / f)}':>7}" for f in FACE_FRACTIONS)
    print(f"  {'detector':<28}{'frame':<10}{sizes}{'ms/frame':>10}{'no face':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, resolution, ratios, ms, empty_ms in face_detection(_FACE_FRAMES.value, tmp):
            print(f"  {name:<28}{resolution:<10}" + "".join(f"{r:>7.2f}" for r in ratios) + f"{ms:>10.1f}{empty_ms:>9.1f}")
        print(f"\nface tracks: ms per frame of detection and tracking (tracking.track_faces; decoding not "
              f"counted), {_TRACKING_SECONDS.value:g} s of 1280×720 30 fps H.264 on the 25 fps grid; "
              f"detect_every 1 is a full detection on every frame")
        print(f"  {'clip':<16}{'detector':<10}{'detect_every':>13}{'ms/frame':>10}{'full share':>12}{'tracks':>8}")
        for clip, name, every, ms, share, n in tracking_cost(_TRACKING_SECONDS.value, tmp):
            print(f"  {clip:<16}{name:<10}{every:>13}{ms:>10.1f}{share:>12.2f}{n:>8}")
    print(f"\ninstalled size of each detector's dependencies (this environment's site-packages):")
    for name, size in detector_install_sizes():
        print(f"  {name:<10}{size}")


# ---------------------------------------------------------------- serving

LIVE_CHUNKS = (0.5, 1.0)  # --chunk_seconds of the live latency runs


def _wav_of(path: str, out: str) -> str:
    """The sound of ``path`` as a 16-bit WAV ``out`` (its first audio stream, decoded)."""
    import av  # noqa: PLC0415

    with av.open(path) as src, av.open(out, "w") as dst:
        a = src.streams.audio[0]
        s = dst.add_stream("pcm_s16le", rate=a.rate, layout=a.layout.name)
        for frame in src.decode(a):
            frame.pts = None
            for packet in s.encode(frame):
                dst.mux(packet)
        for packet in s.encode(None):
            dst.mux(packet)
    return out


# The demo's face network (flags/demo.flags); the rest of the demo model is the paper's.
DEMO_FACE_NET = "resnet10"


def _random_run(workdir: str, modalities: tuple[str, ...], face_net: str) -> str:
    """A run directory with the model of ``modalities`` and face backbone ``face_net`` (random
    weights). It has no data directory: the time base and face crops are the defaults (predict
    warns; silenced here)."""
    from emotion_e2e import run_dir as run_lib  # noqa: PLC0415
    from emotion_e2e.config import FaceNetConfig, InputConfig, ModelConfig, TrainConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model  # noqa: PLC0415

    cfg = TrainConfig(data_dir=os.path.join(workdir, "no_data"), inputs=InputConfig(modalities=modalities),
                      model=ModelConfig(face=FaceNetConfig(backbone=face_net)))
    run = os.path.join(workdir, "run_" + "_".join(modalities) + "_" + face_net)
    run_lib.save_config(run, cfg)
    os.makedirs(os.path.dirname(run_lib.checkpoint_path(run)), exist_ok=True)
    build_model(cfg.model, cfg.inputs).save(run_lib.checkpoint_path(run))
    return run


def decode_seconds(path: str, modalities, time_base) -> float:
    """Wall seconds of what the converter decodes for ``modalities`` without the faces: the
    durations, then the audio and video frames on the grid."""
    from emotion_e2e.data import media  # noqa: PLC0415

    t0 = time.perf_counter()
    n = []
    if "audio" in modalities:
        n.append(time_base.frames_in(media.audio_duration(path)))
    if "face" in modalities:
        n.append(time_base.frames_in(media.video_duration(path)))
    if "audio" in modalities:
        for _ in media.audio_frames(path, time_base, min(n)):
            pass
    if "face" in modalities:
        for _ in media.video_frames(path, time_base, min(n)):
            pass
    return time.perf_counter() - t0


def stream_latency(predictor, frames: int, repeats: int = 10) -> float:
    """Median seconds of one ``stream`` call on ``frames`` frames (random inputs), after a warm-up."""
    rng = np.random.default_rng(0)
    size = predictor.description["face_size"]
    x = {}
    if "audio" in predictor.modalities:
        x["audio"] = rng.uniform(-0.5, 0.5, (1, frames, predictor.description["samples_per_frame"])).astype(np.float32)
    if "face" in predictor.modalities:
        x["face"] = rng.integers(0, 256, (1, frames, size, size, 3), dtype=np.uint8)
    state = predictor.initial_state()
    for _ in range(2):
        predictor.stream(x, state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.stream(x, state)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def serving_suite():
    from emotion_e2e import predict  # noqa: PLC0415
    from emotion_e2e.config import FaceConfig  # noqa: PLC0415

    # The demo models (resnet10 face network) and, beside them, the paper's (ResNet-50); with
    # the default detector (FaceConfig's), and the multimodal ones with MediaPipe's as well.
    cases = [("audio", ("audio",), "resnet50", None, 1),
             ("face (demo, resnet10)", ("face",), DEMO_FACE_NET, None, 1),
             ("audio+face (demo)", ("audio", "face"), DEMO_FACE_NET, None, 1),
             ("audio+face (demo), mediapipe", ("audio", "face"), DEMO_FACE_NET, "mediapipe", 1),
             ("face (ResNet-50)", ("face",), "resnet50", None, 1),
             ("audio+face (ResNet-50)", ("audio", "face"), "resnet50", None, 1),
             ("audio+face (ResNet-50), mediapipe", ("audio", "face"), "resnet50", "mediapipe", 1),
             # predict --faces=all: a trace per person, each through the model
             ("audio+face (demo), 3 people, all", ("audio", "face"), DEMO_FACE_NET, None, 3),
             ("audio+face (ResNet-50), 3 people, all", ("audio", "face"), "resnet50", None, 3)]
    with tempfile.TemporaryDirectory() as tmp:
        videos = {}
        for people in sorted({c[-1] for c in cases}):
            videos[people] = os.path.join(tmp, f"talk_{people}.mp4")
            _face_video(videos[people], _SERVING_SECONDS.value, people=people)
        runs = {(modalities, net): _random_run(tmp, modalities, net) for _, modalities, net, _, _ in cases}
        print(f"\npredict, one {_SERVING_SECONDS.value:g} s 1280×720 30 fps H.264 + 48 kHz AAC recording, chunks "
              f"of {predict.DEFAULT_CHUNK_SECONDS:g} s, {FaceConfig().detector} detector and face tracks unless named: "
              f"× real time per stage (faces: detection, tracking, crops and JPEG; a 3-person panel with "
              f"--faces=all runs the model once per person)")
        print(f"{'model, detector':<40}{'decode':>9}{'faces':>9}{'model':>9}{'whole file':>12}{'1 s chunk latency':>20}")
        for name, modalities, net, detector, people in cases:
            with contextlib.redirect_stderr(io.StringIO()):
                predictor = predict.Predictor.load(runs[modalities, net])
            latency = stream_latency(predictor, round(1 / predictor.time_base.frame_step))
            video = videos[people]
            table = predict.predict_file(predictor, video, progress=False, face_detector=detector,
                                         faces=predict.MAIN if people == 1 else predict.ALL)
            seconds, media_seconds = table.attrs["seconds"], table.attrs["frames"] * predictor.time_base.frame_step
            decode = decode_seconds(video, modalities, predictor.time_base)
            faces = (f"{media_seconds / max(seconds['media'] - decode, 1e-9):>9.1f}" if "face" in modalities
                     else f"{'-':>9}")
            tracks = f", {table.attrs['face_tracks']} tracks" if people > 1 else ""
            print(f"{name:<40}{media_seconds / decode:>9.1f}{faces}{media_seconds / seconds['model']:>9.1f}"
                  f"{table.attrs['real_time_factor']:>12.1f}{latency * 1e3:>17.0f} ms{tracks}")

        print(f"\npredict on a live source: the first {_LIVE_SECONDS.value:g} s of the recording as MPEG-TS (the "
              f"WAV of its sound for the audio model) fed through a named pipe at its own pace; delay from a chunk's "
              f"last frame entering the pipe to its rows in the CSV (the first chunk, which builds the graph, left out)")
        print(f"{'model':<28}{'chunk':>7}{'p50':>9}{'p95':>9}{'max':>9}{'× real time':>13}")
        clip = os.path.join(tmp, "live.mp4")
        _face_video(clip, _LIVE_SECONDS.value)
        sources = {"ts": remux_ts(clip, os.path.join(tmp, "live.ts")), "wav": _wav_of(clip, os.path.join(tmp, "live.wav"))}
        for name, modalities, kind in (("audio", ("audio",), "wav"), ("face (demo)", ("face",), "ts"),
                                       ("audio+face (demo)", ("audio", "face"), "ts")):
            net = "resnet50" if modalities == ("audio",) else DEMO_FACE_NET
            with contextlib.redirect_stderr(io.StringIO()):
                predictor = predict.Predictor.load(runs.get((modalities, net)) or _random_run(tmp, modalities, net))
            for chunk in LIVE_CHUNKS:
                delays, rtf = live_latency(predictor, sources[kind], chunk, tmp)
                d = np.array(delays[1:]) * 1e3
                print(f"{name:<28}{chunk:>6g}s{np.median(d):>6.0f} ms{np.percentile(d, 95):>6.0f} ms"
                      f"{d.max():>6.0f} ms{rtf:>13.1f}")

        print(f"\npredict CLI peak memory, audio+face (ResNet-50), 1280×720 30 fps H.264 + 48 kHz AAC, "
              f"{FaceConfig().detector} detector (the default):")
        for m in (float(x) for x in _SERVING_MINUTES.value):
            video = os.path.join(tmp, f"talk_{m:g}min.mp4")
            _face_video(video, 60 * m)
            t0 = time.perf_counter()
            rss = peak_rss_mb([sys.executable, "-m", "emotion_e2e.predict",
                               f"--model={runs[('audio', 'face'), 'resnet50']}",
                               f"--input={video}", f"--output_dir={os.path.join(tmp, 'predictions')}"],
                              env=dict(os.environ, CI="true"))
            wall = time.perf_counter() - t0
            print(f"  {m:g} min: peak RSS {rss:,.0f} MB, {60 * m / wall:.2f}× real time (with start-up)")


# ------------------------------------------------------------- live sources

class PacedFeed(threading.Thread):
    """Writes a file into ``dst`` (a named pipe, or a socket's file) at the pace of its own
    timestamps: the bytes of the packet of time t (from the stream's start) go out at wall time
    ``start + t``. ``written`` holds ``(t, wall time)`` per packet; ``stop_after`` seconds of
    media, then it holds the pipe open without writing until ``release`` is set."""

    def __init__(self, path: str, dst=None, stop_after: float | None = None):
        super().__init__(daemon=True)
        self.path, self.dst, self.stop_after = path, dst, stop_after
        import av  # noqa: PLC0415

        self.written, self.release, self.end = [], threading.Event(), None
        with av.open(path) as c:  # where each packet ends in the file, and its time
            marks, start = [], None
            for p in c.demux():
                if p.pts is None or p.pos is None or p.pos < 0:
                    continue
                start = p.pts * p.time_base if start is None else min(start, p.pts * p.time_base)
                marks.append((float(p.pts * p.time_base), p.pos + p.size))
        self.marks = sorted((t - float(start), pos) for t, pos in marks)
        with open(path, "rb") as f:
            self.data = f.read()

    def run(self):
        out = open(self.dst, "wb") if isinstance(self.dst, (str, os.PathLike)) else self.dst
        try:
            t0, sent = time.perf_counter(), 0
            for t, end in self.marks:
                if self.stop_after is not None and t > self.stop_after:
                    self.release.wait()
                    return
                time.sleep(max(0.0, t0 + t - time.perf_counter()))
                end = max(end, sent)
                out.write(self.data[sent:end])
                out.flush()
                sent = end
                self.written.append((t, time.perf_counter()))
            out.write(self.data[sent:])
            out.flush()
            self.end = time.perf_counter()
        except BrokenPipeError:
            pass
        finally:
            out.close()


class RowWatch(threading.Thread):
    """Polls a CSV as it grows: ``seen`` holds ``(wall time, rows)`` whenever the row count changes."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path, self.seen, self.done = path, [], threading.Event()

    def run(self):
        last = 0
        while not self.done.is_set():
            try:
                with open(self.path) as f:
                    rows = max(0, sum(1 for _ in f) - 1)
            except FileNotFoundError:
                rows = 0
            if rows != last:
                self.seen.append((time.perf_counter(), rows))
                last = rows
            time.sleep(0.005)


def chunk_delays(written, seen, rows_per_chunk: int, step: float = 0.04) -> list[float]:
    """Per chunk of ``rows_per_chunk`` rows, the seconds from its last frame's packet entering the
    source (``PacedFeed.written``) to its rows in the CSV (``RowWatch.seen``)."""
    out = []
    for k in range(1, len(seen) + 1):
        want = k * rows_per_chunk
        when = next((w for w, n in seen if n >= want), None)
        # the last packet that starts within the chunk's last frame, which ends at want·step
        entered = max((w for t, w in written if t < want * step - 1e-9), default=None)
        if when is not None and entered is not None:
            out.append(when - entered)
    return out


def remux_ts(path: str, out: str) -> str:
    """``path``'s packets copied into an MPEG-TS file ``out`` (a broadcast stream: no index,
    readable from any point on), as a camera or an encoder would stream them."""
    import av  # noqa: PLC0415

    with av.open(path) as src, av.open(out, "w", format="mpegts") as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    return out


def live_latency(predictor, source: str, chunk_seconds: float, workdir: str) -> tuple[list[float], float]:
    """``(per-chunk delays in seconds, real-time factor)`` of ``predict`` reading ``source`` (a
    file) through a named pipe fed at the file's own pace: each delay runs from a chunk's last
    frame entering the pipe to its rows in the CSV."""
    from emotion_e2e import predict  # noqa: PLC0415

    fifo = os.path.join(workdir, f"live_{time.monotonic_ns()}{os.path.splitext(source)[1]}")
    os.mkfifo(fifo)
    out = os.path.join(workdir, "live_out")
    feed, watch = PacedFeed(source, fifo), RowWatch(os.path.join(out, predict.stem(fifo) + ".csv"))
    feed.start()
    watch.start()
    reports = []
    predict.predict_files(predictor, [fifo], out, chunk_seconds=chunk_seconds, progress=False, report=reports.append)
    watch.done.set()
    feed.join()
    os.remove(fifo)
    step = predictor.time_base.frame_step
    frames = round(chunk_seconds / step)
    rtf = float(re.search(r"([0-9.]+)× real time", reports[-1]).group(1))
    return chunk_delays(feed.written, watch.seen, frames, step), rtf


def _best_seconds(call, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``call`` after a warm-up call."""
    call()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dtype, n=2048, repeats=10) -> float:
    """GFLOP/s of an ``n``×``n`` matmul chain, the best of ``repeats``."""
    import tensorflow as tf  # noqa: PLC0415

    a = tf.random.normal([n, n], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)

    @tf.function
    def mm(x, y):
        return tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y), tf.float32))

    return 2 * n ** 3 / _best_seconds(lambda: mm(a, b).numpy(), repeats) / 1e9


def model_flops(model, frames: int) -> float:
    """Forward FLOPs (2 per multiply-add) of convolutions, dense layers and LSTMs for ``frames``
    frames: per-frame networks count once per frame, recurrent layers once per time step."""
    import keras  # noqa: PLC0415

    from emotion_e2e.models.recurrent import PeepholeLSTM  # noqa: PLC0415

    def per_call(layer):
        if isinstance(layer, keras.Model):
            return sum(per_call(sub) for sub in layer.layers)
        if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D):
            out = int(np.prod(layer.output.shape[1:]))  # per frame: (time or height, width, filters)
            return 2 * out * int(np.prod(layer.kernel.shape[:-1]))
        if isinstance(layer, keras.layers.Dense):
            return 2 * int(np.prod(layer.kernel.shape))
        if isinstance(layer, PeepholeLSTM | keras.layers.LSTM):
            cell = layer if isinstance(layer, PeepholeLSTM) else layer.cell
            return 2 * (int(np.prod(cell.kernel.shape)) + int(np.prod(cell.recurrent_kernel.shape)))
        return 0

    return frames * sum(per_call(layer) for layer in model.layers)


def time_model(model, inputs, labels, train: bool, repeats: int) -> float:
    """Seconds per call (inference) or per optimizer step (train), the median of ``repeats``.

    ``train_on_batch`` and ``predict_on_batch`` run Keras' compiled step functions."""
    call = (lambda: model.train_on_batch(inputs, labels)) if train else (lambda: model.predict_on_batch(inputs))
    return _median_seconds(call, repeats)


def _median_seconds(call, repeats: int) -> float:
    """Seconds of the median of ``repeats`` calls of ``call`` after a warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def lstm_seconds(model, batch: int, frames: int, repeats: int) -> tuple[float, float]:
    """The model's LSTM stack alone on ``(batch, frames, features)`` inputs in its compute dtype:
    seconds per forward pass and per forward and backward pass (gradients w.r.t. the input and
    every weight of the stack), medians of ``repeats`` calls."""
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.models.inference import recurrent_layers  # noqa: PLC0415

    lstms = recurrent_layers(model)
    x = tf.cast(tf.random.normal((batch, frames, lstms[0].input.shape[-1])), lstms[0].compute_dtype)
    weights = [w for layer in lstms for w in layer.trainable_weights]

    def forward(x):
        for layer in lstms:
            x = layer(x)
        return x

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
        return tape.gradient(y, [x, *weights], output_gradients=tf.ones_like(y))

    forward = tf.function(forward)
    return (_median_seconds(lambda: forward(x).numpy(), repeats),
            _median_seconds(lambda: [g.numpy() for g in forward_backward(x)], repeats))


def train_step_breakdown(model, inputs, labels, steps: int = 3) -> dict:
    """Where a train step's time goes: TF's profiler traces ``steps`` calls of ``train_on_batch`` and
    the kernels' self time (summed over threads, per step) is grouped by op type and by the model's
    top-level layer, forward and backward apart (``"backward face_network"``; ``"other"``: the loss,
    metrics and optimizer). Returns ``{"by_op": [(name, ms), ...], "by_layer": [...]}``, largest first."""
    import collections  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.core.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    model.train_on_batch(inputs, labels)  # traced and warm before the trace starts
    layers = {layer.name for layer in model.layers}
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(inputs, labels)
        tf.profiler.experimental.stop()
        (path,) = tf.io.gfile.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")  # one trace: this one
        space = xplane_pb2.XSpace.FromString(tf.io.gfile.GFile(path, "rb").read())
    by_op, by_layer = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/op_name:OpType" for a kernel
                if ":" not in name or "/" not in name:
                    continue
                op_name, op_type = name.rsplit(":", 1)
                ms = event.duration_ps / 1e9 / steps
                by_op[op_type.split("#")[0]] += ms
                layer = _top_layer(op_name, layers)
                by_layer[f"{'backward' if 'gradient_tape' in op_name else 'forward'} {layer}"] += ms
    return {"by_op": by_op.most_common(), "by_layer": by_layer.most_common()}


def _top_layer(op_name: str, layers: set[str]) -> str:
    """The model's top-level layer an op belongs to (TF scopes add ``_1``, ``_2`` to layer names), or "other"."""
    for part in op_name.split("/"):
        while True:
            if part in layers:
                return part
            shorter = re.sub(r"_\d+$", "", part)
            if shorter == part:
                break
            part = shorter
    return "other"


def _print_breakdown(breakdown: dict, top: int = 8):
    total = sum(ms for _, ms in breakdown["by_op"]) or 1.0
    for key, title in (("by_op", "op type"), ("by_layer", "layer")):
        rows = ", ".join(f"{name} {ms:,.0f} ms ({100 * ms / total:.0f} %)" for name, ms in breakdown[key][:top])
        print(f"    by {title}: {rows}")


def convolution_rates(model, frames: int, dtype, repeats: int = 5) -> list[tuple[str, int, float, float]]:
    """The face network's convolutions alone, each distinct one timed forward and backward
    (input and kernel gradients, as a train step computes them) on ``frames`` frames:
    ``[(description, count in the network, GFLOP, seconds per call of all of them)]``,
    slowest total first."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.models.model import feature_network  # noqa: PLC0415

    groups = {}
    for layer in feature_network(model, "face").get_layer("backbone").layers:
        if isinstance(layer, keras.layers.Conv2D):
            shape = tuple(layer.input.shape[1:])
            key = (shape, tuple(layer.kernel.shape), tuple(layer.strides), layer.padding)
            groups.setdefault(key, [layer, 0])[1] += 1
    rows = []
    for (shape, kernel_shape, strides, padding), (layer, count) in groups.items():
        x = tf.cast(tf.random.normal((frames, *shape)), dtype)
        kernel = tf.cast(tf.random.normal(kernel_shape, stddev=0.05), dtype)

        @tf.function
        def step(x, kernel, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = layer.convolution_op(x, kernel)
            return tape.gradient(y, [x, kernel], output_gradients=y)

        best = _best_seconds(lambda step=step, x=x, kernel=kernel: [g.numpy() for g in step(x, kernel)], repeats)
        out = layer.compute_output_shape((frames, *shape))
        flops = 3 * 2 * int(np.prod(out)) * int(np.prod(kernel_shape[:-1]))
        h, w, c = shape
        rows.append((f"{kernel_shape[0]}×{kernel_shape[1]}/{strides[0]} {h}×{w}×{c}→{out[-1]}", count,
                     count * flops / 1e9, count * best))
    return sorted(rows, key=lambda r: -r[3])


MODEL_MODES = ("inference", "train step", "inf. opt.")


def _model_pair(precision: str, modalities):
    """``(model, optimize_for_inference(model), label names)``, built under ``precision``'s
    policy and compiled with training's optimizer and loss."""
    import keras  # noqa: PLC0415

    from emotion_e2e import losses  # noqa: PLC0415
    from emotion_e2e.config import InputConfig, ModelConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model  # noqa: PLC0415
    from emotion_e2e.models.inference import optimize_for_inference  # noqa: PLC0415
    from emotion_e2e.models.kernels import FusedAdam  # noqa: PLC0415

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        inputs = InputConfig(modalities=modalities)
        model = build_model(ModelConfig(), inputs)
        model.compile(optimizer=FusedAdam(1e-4), loss={n: losses.CCCLoss() for n in inputs.label_names})
        fast = optimize_for_inference(model)
        fast.compile()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, fast, inputs.label_names


def models_suite():
    """Rounds of (matmul peak, then every mode of the model) per precision, interleaved, so each
    figure is a median over rounds and each "% of peak" is a step against the peak measured
    next to it: on a shared machine both drift by ±30 % within minutes."""
    import tensorflow as tf  # noqa: PLC0415

    dtypes = {"fp32": tf.float32, "bf16": tf.bfloat16}
    try:
        matmul_peak(tf.bfloat16, repeats=1)
    except (tf.errors.OpError, ValueError) as e:  # no bf16 matmul kernel on this CPU
        print(f"bf16 matmul unavailable: {e}")
        del dtypes["bf16"]
    cases = [("audio", ("audio",), 2, 150), ("audio+face (ResNet-50)", ("audio", "face"), 1, 25)]
    for name, modalities, batch, frames in cases:
        models = {p: _model_pair(p, modalities) for p in dtypes}
        labels = models["fp32"][2]
        rng = np.random.default_rng(0)
        x = {}
        if "audio" in modalities:
            x["audio"] = tf.constant(rng.uniform(-0.5, 0.5, (batch, frames, 640)), tf.float32)
        if "face" in modalities:
            x["face"] = tf.constant(rng.uniform(0, 1, (batch, frames, 96, 96, 3)), tf.float32)
        y = {n: tf.constant(rng.uniform(-1, 1, (batch, frames)), tf.float32) for n in labels}
        flops = model_flops(models["fp32"][0], batch * frames)
        peaks = {p: [] for p in dtypes}
        seconds = {(p, mode): [] for p in dtypes for mode in MODEL_MODES}
        for _ in range(_ROUNDS.value):
            for p, dtype in dtypes.items():
                peaks[p].append(matmul_peak(dtype, repeats=3))
                model, fast, _ = models[p]
                for mode in MODEL_MODES:
                    seconds[p, mode].append(time_model(fast if mode == "inf. opt." else model, x, y,
                                                       mode == "train step", _REPEATS.value))
        print(f"\n{name}, batch {batch} × {frames}, {_ROUNDS.value} rounds; matmul peak (2048×2048): "
              + ", ".join(f"{p} {np.median(v):,.0f} GFLOP/s ({min(v):,.0f}–{max(v):,.0f})" for p, v in peaks.items()))
        print(f"{'precision':<10}{'mode':<11}{'frames/s':>10}{'× real time':>13}{'GFLOP/s':>10}{'% of peak':>11}")
        for p in dtypes:
            for mode in MODEL_MODES:
                work = flops * (3 if mode == "train step" else 1)  # backward ≈ 2 × forward
                t = np.array(seconds[p, mode])
                fps = batch * frames / np.median(t)
                share = np.median(100 * work / t / 1e9 / np.array(peaks[p]))  # each round against its own peak
                print(f"{p:<10}{mode:<11}{fps:>10,.0f}{fps * 0.04:>13,.1f}{work / np.median(t) / 1e9:>10,.0f}"
                      f"{share:>10.0f}%")
        for p, dtype in dtypes.items():
            if "face" in modalities:
                rows = convolution_rates(models[p][0], batch * frames, dtype)
                gflop, total = sum(r[2] for r in rows), sum(r[3] for r in rows)
                print(f"{p} face-network convolutions alone, forward and backward: {gflop / total:,.0f} GFLOP/s, "
                      f"{100 * gflop / total / np.median(peaks[p]):.0f} % of the median peak; the slowest: "
                      + ", ".join(f"{d} ×{n} {g / t:,.0f}" for d, n, g, t in rows[:5]))
        if "face" not in modalities:
            for p in dtypes:
                fwd, fwd_bwd = lstm_seconds(models[p][0], batch, frames, _ROUNDS.value * _REPEATS.value)
                print(f"{p} LSTM stack alone: forward {fwd * 1e3:,.1f} ms, "
                      f"forward and backward {fwd_bwd * 1e3:,.1f} ms")
        if "bf16" in dtypes:
            ratio = np.array(seconds["fp32", "train step"]) / np.array(seconds["bf16", "train step"])
            print(f"bf16 train step speed-up over fp32: {np.median(ratio):.2f}× (rounds: "
                  + ", ".join(f"{r:.2f}" for r in ratio) + ")")
        for p in dtypes:  # kernel self time per step, summed over threads
            print(f"  {p} train step, where the time goes:")
            _print_breakdown(train_step_breakdown(models[p][0], x, y))


def main(argv):
    del argv
    if _SUITE.value in ("all", "models"):
        models_suite()
    if _SUITE.value in ("all", "data"):
        data_suite()
    if _SUITE.value in ("all", "faces"):
        faces_suite()
    if _SUITE.value in ("all", "serving"):
        serving_suite()


if __name__ == "__main__":
    app.run(main)
