"""The faces suite: the share of frames in which each face detector finds a real face
(scikit-image's astronaut on a flat dark background, H.264-coded and decoded like any recording),
by face height (1/10 to 1/2 of the frame height) and resolution (640×480, 1280×720), and ms per
frame; the configurations shipped before (MediaPipe's short-range model, Haar at 320 px), YuNet at
320 px and short-range-then-full-range MediaPipe for comparison; what each detector adds to an
install (model file, cascade, or MediaPipe's dependency tree) on disk; and the cost per frame of
face tracks (detection and tracking) on a 1280×720 talk with one face and a panel of three, for
several ``detect_every`` (1: the whole frame searched on every frame), with the share of frames
searched whole."""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import flags

from emotion_e2e.benchmark.media import ASTRONAUT_WINDOW, face_video, write_h264

_FACE_FRAMES = flags.DEFINE_integer("face_frames", 25, "Frames per face size and resolution in the faces suite.")
_TRACKING_SECONDS = flags.DEFINE_float("tracking_seconds", 10, "faces: seconds of each clip the tracking cost is timed on.")

FACE_FRACTIONS = (1 / 10, 1 / 8, 1 / 5, 1 / 3, 1 / 2)  # face height / frame height
FACE_RESOLUTIONS = ((480, 640), (720, 1280))  # (height, width)
# The astronaut's hand-labelled face (eyebrows to chin) inside a 300×300 window of the photo
# (as tests/data/face_fixtures.py), and the flat dark grey she is pasted on.
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
        face_video(path, seconds, people=people)
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
