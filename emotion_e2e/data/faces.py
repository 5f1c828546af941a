"""Face crops (docs/design.md §3): detect, crop a square with margin (turned so that the eyes
lie level with ``FaceConfig.align="eyes"``), JPEG-encode.

Frames are RGB ``(H, W, 3)`` uint8 throughout; crops are ``(size, size, 3)``
uint8. ``face_crops`` streams one recording's crops in constant memory, following one
person: its face track (``tracking``), cut from a second decoding.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.resources
import math
import os
from typing import Callable, Iterator, NamedTuple

import cv2
import numpy as np

from emotion_e2e.config import FaceConfig
from emotion_e2e.errors import ConfigError, DataError

HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# detectMultiScale: 10 % pyramid steps and 5 overlapping hits are OpenCV's usual
# trade-off between missed faces and false positives on frontal faces.
HAAR_SCALE_FACTOR = 1.1
HAAR_MIN_NEIGHBORS = 5
# Every detector must find faces from 1/10 of the frame's shorter side up (a webcam or
# interview framing). A smaller face is not the speaker, but the floor sits below 1/10
# because the cascade's boxes come in 10 % steps and run ~5 % off the face's size: with
# the floor at exactly 0.1 a 1/10 face was missed in 17 % of 640×480 composites, at 0.08
# in 2 % of 1280×720 ones, at 0.07 in none. The cascade's own 24 px window is the hard
# floor, which is what sets FaceConfig.detect_max_side.
HAAR_MIN_FACE_FRACTION = 0.07
HAAR_MIN_FACE_PX = 24
# MediaPipe's two models (``model_selection``): short-range, trained on faces filling a
# selfie frame (within ~2 m), and full-range (up to ~5 m). Measured on the astronaut's
# face on a flat dark background in H.264 video (``benchmark --suite=faces``): the
# full-range model finds every face from 1/10 to 1/2 of the frame height in 640×480 and
# 1280×720, for 1-2 ms more per frame; the short-range one finds 1/10 faces in 12-20 %
# of frames. Short-range first and full-range only on a miss finds 92 %: on small faces
# short-range often returns a wrong box instead of none, so the fallback never runs.
MEDIAPIPE_SHORT_RANGE, MEDIAPIPE_FULL_RANGE = 0, 1
MEDIAPIPE_MIN_CONFIDENCE = 0.5
# Square tiles searched when the whole frame has no face (see MediaPipeDetector.detect) overlap
# by this fraction of their side, so a face of up to 1/5 of the frame height lies whole in one
# of them; larger faces the whole-frame pass finds in every frame.
MEDIAPIPE_TILE_OVERLAP = 0.2
MEDIAPIPE_INSTALL_HINT = "pip install 'emotion_e2e[mediapipe]'"
# YuNet (2023mar, OpenCV Zoo; MIT, its LICENSE beside it): an ONNX model shipped inside this
# package (emotion_e2e/data/models/), run by OpenCV's cv2.FaceDetectorYN. The sha256 guards
# against a truncated or replaced file.
YUNET_MODEL = "face_detection_yunet_2023mar.onnx"
YUNET_LICENSE = "LICENSE_face_detection_yunet"
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
# Score threshold, NMS overlap and candidates kept before NMS: OpenCV Zoo's defaults, kept by
# measurement. The astronaut's face from 1/12 to 1/2 of the frame height in H.264 640×480 and
# 1280×720 video (as benchmark --suite=faces) scores 0.90-0.95 (0.91 and up from 1/10), and
# nothing else in those frames scores 0.3; of scikit-image's 18 photos without a human face
# (text, a cat, coins, galaxies, ...), at 640×480 and 1280×720, the highest score is 0.85 (on
# printed text): at 0.8 that would be a face, at 0.9 nothing is.
YUNET_SCORE_THRESHOLD = 0.9
YUNET_NMS_THRESHOLD = 0.3
YUNET_TOP_K = 5000
# Levelling the eyes (FaceConfig.align="eyes", ``level_eyes``): a detector's eye line on a rolled
# face can fall short of the roll (YuNet's, on the astronaut's face rolled 20°: 1-3° when 90 px
# tall, 13-23° at 180 px), but on the square turned by it the face is nearly upright, where the
# landmarks are best; the residual angle found there is added, up to LEVEL_MAX_DETECTIONS
# times, until it is under LEVEL_TOLERANCE_DEGREES. The square is seen at LEVEL_MIN_SIDE px at
# least: a 90-px face rolled 20°, enlarged so, ended 1-10° off level, against 17-20° unrefined.
# With three detections every ±20° and ±35° face of 180-225 px ended within 3° of level
# (docs/design.md §3); ±20° ones reach a residual under 0.5° within three.
LEVEL_MAX_DETECTIONS = 3
LEVEL_TOLERANCE_DEGREES = 0.5
LEVEL_MIN_SIDE = 160


class Box(NamedTuple):
    """A face box in full-frame pixel coordinates: top-left ``(x, y)``, size ``(w, h)``."""

    x: int
    y: int
    w: int
    h: int


def _check_rgb(rgb, what="frame"):
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
        got = f"{type(rgb).__name__} {getattr(rgb, 'shape', '')} {getattr(rgb, 'dtype', '')}"
        raise ValueError(f"{what} must be an (H, W, 3) uint8 RGB array. Received: {got}")


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float, float]:
    """``rgb`` shrunk so its longer side is at most ``max_side``, and the x, y factors back to full size."""
    h, w = rgb.shape[:2]
    scale = max(h, w) / max_side
    if scale <= 1:
        return rgb, 1.0, 1.0
    small = cv2.resize(rgb, (max(1, round(w / scale)), max(1, round(h / scale))), interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1], h / small.shape[0]


def _square_tiles(h: int, w: int) -> list[tuple[int, int, int]]:
    """``(x0, y0, side)`` of the fewest squares of side ``min(h, w)`` that cover an ``(h, w)`` image
    with neighbours overlapping by ``MEDIAPIPE_TILE_OVERLAP`` × side or more, spread evenly along
    its longer side (none for a square image): 2 for 4:3 and 16:9."""
    side, longer = min(h, w), max(h, w)
    if longer == side:
        return []
    overlap = MEDIAPIPE_TILE_OVERLAP * side
    count = max(2, math.ceil((longer - overlap) / (side - overlap)))
    starts = np.linspace(0, longer - side, count).round().astype(int)
    return [(int(s), 0, side) if w > h else (0, int(s), side) for s in starts]


class Detection(NamedTuple):
    """One face a detector found in a frame, in full-frame pixel coordinates.

    ``score``: the detector's confidence in [0, 1], NaN for a detector that gives none (Haar).
    ``eyes``: ``(2, 2)`` float32 ``[[x, y] of the subject's right eye, [x, y] of the left eye]``
    (the right eye is on the image's left in a frontal face), or None for a detector that gives
    no landmarks (Haar).
    """

    box: Box
    score: float
    eyes: np.ndarray | None = None


def largest_first(detections) -> list[Detection]:
    """``detections`` sorted by box area, largest first (ties keep their order)."""
    return sorted(detections, key=lambda d: -d.box.w * d.box.h)


class FaceDetector(abc.ABC):
    """Finds the faces of an RGB frame ``(H, W, 3)`` uint8."""

    # Whether the crops turned by this detector's eyes (FaceConfig.align="eyes") are levelled by
    # searching the turned square again (``level_eyes``, in ``tracking.track_faces``).
    level_on_turned_square = False

    @abc.abstractmethod
    def detect_all(self, rgb: np.ndarray) -> list[Detection]:
        """Every face found in ``rgb``, largest first (``largest_first``); [] when there is none."""

    def detect(self, rgb: np.ndarray) -> Box | None:
        """The largest face's ``Box`` in full-frame pixels, or ``None`` if there is none."""
        faces = self.detect_all(rgb)
        return faces[0].box if faces else None


class HaarDetector(FaceDetector):
    """OpenCV's bundled frontal-face Haar cascade (no weights to fetch)."""

    def __init__(self, cfg: FaceConfig = FaceConfig()):
        self.cfg = cfg
        root = getattr(getattr(cv2, "data", None), "haarcascades", None)
        path = os.path.join(root, HAAR_CASCADE) if root else None
        if not path or not os.path.isfile(path):
            raise ConfigError(
                f"OpenCV {cv2.__version__} ships no Haar cascade {HAAR_CASCADE} (looked at {path}); "
                f"install opencv-python-headless==4.11.0.86 (OpenCV 5.x ships none) or use detector='mediapipe'")
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise ConfigError(f"OpenCV could not load the Haar cascade {path}")

    def detect_all(self, rgb):
        _check_rgb(rgb)
        small, sx, sy = _downscale(rgb, self.cfg.detect_max_side)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        min_px = max(HAAR_MIN_FACE_PX, round(HAAR_MIN_FACE_FRACTION * min(gray.shape)))
        faces = self._find(gray, min_px)
        if len(faces) == 0:
            # Equalising the histogram rescues dim or washed-out faces, but only as a fallback:
            # where a flat dark background fills most of the frame it lifts that one grey level
            # to the top of the range and squeezes a well-lit face into the few levels above it
            # (its middle 90 %, grey 59..219, became 228..254 on the 1/8 composite), and the
            # cascade loses it.
            faces = self._find(cv2.equalizeHist(gray), min_px)
        # The cascade gives no confidence and no landmarks.
        return largest_first(Detection(Box(round(x * sx), round(y * sy), round(w * sx), round(h * sy)), math.nan)
                             for x, y, w, h in faces)

    def _find(self, gray: np.ndarray, min_px: int) -> np.ndarray:
        """The cascade's ``(n, 4)`` boxes ``(x, y, w, h)`` of side >= ``min_px`` in a ``(h, w)`` uint8 image."""
        return self._cascade.detectMultiScale(gray, scaleFactor=HAAR_SCALE_FACTOR,
                                              minNeighbors=HAAR_MIN_NEIGHBORS, minSize=(min_px, min_px))


class MediaPipeDetector(FaceDetector):
    """MediaPipe's face detection (legacy ``solutions`` API; its model ships inside the wheel)."""

    def __init__(self, cfg: FaceConfig = FaceConfig(), model_selection: int = MEDIAPIPE_FULL_RANGE):
        """``model_selection``: ``MEDIAPIPE_FULL_RANGE`` (see its comment for why) or ``MEDIAPIPE_SHORT_RANGE``."""
        if model_selection not in (MEDIAPIPE_SHORT_RANGE, MEDIAPIPE_FULL_RANGE):
            raise ValueError(f"model_selection must be {MEDIAPIPE_SHORT_RANGE} (short-range) or "
                             f"{MEDIAPIPE_FULL_RANGE} (full-range). Received: {model_selection!r}")
        try:
            import mediapipe as mp
        except ImportError as e:
            raise ConfigError(f"detector='mediapipe' needs mediapipe: {MEDIAPIPE_INSTALL_HINT} ({e})") from e
        face_detection = getattr(getattr(mp, "solutions", None), "face_detection", None)
        if face_detection is None:  # newer releases dropped the legacy API that ships its model
            raise ConfigError(f"mediapipe {getattr(mp, '__version__', '?')} has no mediapipe.solutions."
                              f"face_detection; {MEDIAPIPE_INSTALL_HINT} installs mediapipe==0.10.21")
        self.cfg = cfg
        self._mp = face_detection.FaceDetection(model_selection=model_selection,
                                                min_detection_confidence=MEDIAPIPE_MIN_CONFIDENCE)

    def detect_all(self, rgb):
        _check_rgb(rgb)
        small = _downscale(rgb, self.cfg.detect_max_side)[0]
        h, w = small.shape[:2]
        boxes = self._boxes(small, 0.0, 0.0, 1.0, 1.0)
        if not boxes:
            # The model sees its input letterboxed to a square (192×192 for full-range), so in a
            # 16:9 frame a face of 1/10 of the height shrinks to ~11 px, the edge of what it finds
            # (~90 % of 1280×720 frames against 100 % of 640×480 ones). Square tiles along the
            # longer side show it the face 16/9 times larger; they cost two more runs, only on
            # frames where the whole frame gave nothing.
            for x0, y0, side in _square_tiles(h, w):
                boxes += self._boxes(small[y0:y0 + side, x0:x0 + side], x0 / w, y0 / h, side / w, side / h)
        # Relative coordinates: scale straight to the full frame. Boxes may reach past the
        # border; crop_face pads, so the face stays centred.
        H, W = rgb.shape[:2]
        faces = []
        for (x, y, bw, bh), score, eyes in boxes:
            box = Box(round(x * W), round(y * H), round(bw * W), round(bh * H))
            if box.w > 0 and box.h > 0:
                faces.append(Detection(box, score, (eyes * (W, H)).astype(np.float32)))
        return largest_first(faces)

    def _boxes(self, image, x0, y0, sx, sy) -> list[tuple[tuple[float, float, float, float], float, np.ndarray]]:
        """``((x, y, w, h), score, eyes)`` of each face the model finds in an ``(h, w, 3)`` RGB
        ``image``: the box and the ``(2, 2)`` eyes (right, left) as fractions of the frame whose
        part ``image`` is: its left/top at ``x0``/``y0`` and ``sx``/``sy`` wide/tall."""
        result = self._mp.process(np.ascontiguousarray(image))
        out = []
        for d in result.detections or ():
            b, points = d.location_data.relative_bounding_box, d.location_data.relative_keypoints
            # MediaPipe's keypoints: right eye, left eye, nose tip, mouth centre, right and left ear.
            eyes = np.array([[x0 + p.x * sx, y0 + p.y * sy] for p in points[:2]], np.float64)
            out.append(((x0 + b.xmin * sx, y0 + b.ymin * sy, b.width * sx, b.height * sy), float(d.score[0]), eyes))
        return out

    def close(self):
        self._mp.close()


def model_file(name: str) -> importlib.resources.abc.Traversable:
    """A file of ``emotion_e2e/data/models/`` (package data: found in a wheel, an editable install
    or the source tree alike)."""
    return importlib.resources.files(__package__).joinpath("models", name)


class YuNetDetector(FaceDetector):
    """YuNet (OpenCV Zoo's 2023mar model, inside this package) through ``cv2.FaceDetectorYN``."""

    # Its eye line falls short of a roll (see LEVEL_MAX_DETECTIONS). MediaPipe's does not, and
    # levelled so its 180-px faces rolled ±20° ended 5-8° off level instead of 1-3°.
    level_on_turned_square = True

    def __init__(self, cfg: FaceConfig = FaceConfig()):
        self.cfg = cfg
        path = model_file(YUNET_MODEL)
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"the YuNet model {YUNET_MODEL} is missing from the installed package "
                              f"({path}: {e}); reinstall emotion_e2e") from e
        digest = hashlib.sha256(data).hexdigest()
        if digest != YUNET_SHA256:
            raise ConfigError(f"{path} is not the YuNet 2023mar model: sha256 {digest} ({len(data)} bytes), "
                              f"expected {YUNET_SHA256}; reinstall emotion_e2e")
        self._size = None  # (w, h) the network is set up for; set on the first frame
        self._net = cv2.FaceDetectorYN.create("onnx", np.frombuffer(data, np.uint8), np.empty(0, np.uint8), (0, 0),
                                              YUNET_SCORE_THRESHOLD, YUNET_NMS_THRESHOLD, YUNET_TOP_K)

    def detect_all(self, rgb):
        _check_rgb(rgb)
        small, sx, sy = _downscale(rgb, self.cfg.detect_max_side)
        size = (small.shape[1], small.shape[0])
        if size != self._size:  # detect() refuses an image of another size than the one set
            self._net.setInputSize(size)
            self._size = size
        # OpenCV's blob takes the channels as they come: the model was trained on BGR.
        rows = self._net.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))[1]
        # A row: x, y, w, h, the subject's right eye x, y, left eye x, y, nose, mouth corners, score.
        faces = []
        for row in () if rows is None else rows:
            x, y, w, h = row[:4]
            box = Box(round(x * sx), round(y * sy), round(w * sx), round(h * sy))
            if box.w > 0 and box.h > 0:
                eyes = (row[4:8].reshape(2, 2) * (sx, sy)).astype(np.float32)
                faces.append(Detection(box, float(row[-1]), eyes))
        return largest_first(faces)


DETECTORS = {"yunet": YuNetDetector, "haar": HaarDetector, "mediapipe": MediaPipeDetector}


def make_detector(cfg: FaceConfig) -> FaceDetector:
    """The detector named by ``cfg.detector``."""
    return DETECTORS[cfg.detector](cfg)


def crop_face(rgb: np.ndarray, box: Box, cfg: FaceConfig, eyes: np.ndarray | None = None) -> np.ndarray:
    """The ``(cfg.size, cfg.size, 3)`` uint8 square of side ``(1 + margin)·max(w, h)`` centred on ``box``.

    Parts of the square outside the frame are black, so the face stays centred. With
    ``cfg.align == "eyes"`` and ``eyes`` given (a ``Detection``'s ``(2, 2)`` ``[right eye, left
    eye]`` in full-frame pixels), the same square is cut from the frame rotated about the box's
    centre by the eye line's angle, so that the eyes lie level in the crop (any roll; upright
    eyes give the unaligned crop). Without ``eyes``, or with ``align == "none"``, it is upright.
    A frame whose face was not found is turned by the eyes held from a detection of another
    frame, as its box is (``tracking.Track.eyes_at``).
    """
    _check_rgb(rgb)
    x0, y0, side = _square(box, cfg)
    if cfg.align == "eyes" and eyes is not None:
        return _aligned_crop(rgb, x0, y0, side, _eye_angle(eyes), cfg.size)
    H, W = rgb.shape[:2]
    square = np.zeros((side, side, 3), np.uint8)
    xa, xb, ya, yb = max(x0, 0), min(x0 + side, W), max(y0, 0), min(y0 + side, H)
    if xa < xb and ya < yb:
        square[ya - y0:yb - y0, xa - x0:xb - x0] = rgb[ya:yb, xa:xb]
    return _resize(square, cfg.size)


def _square(box: Box, cfg: FaceConfig) -> tuple[int, int, int]:
    """``(x0, y0, side)``: the crop's square of side ``(1 + margin)·max(w, h)`` centred on ``box``."""
    side = max(1, round((1 + cfg.margin) * max(box.w, box.h)))
    return round(box.x + box.w / 2 - side / 2), round(box.y + box.h / 2 - side / 2), side


def level_eyes(rgb: np.ndarray, box: Box, eyes: np.ndarray, detector: FaceDetector, cfg: FaceConfig) -> np.ndarray:
    """``eyes`` (a ``Detection``'s ``(2, 2)`` ``[right eye, left eye]`` in full-frame pixels, the
    face's ``box`` in ``rgb``) turned about their midpoint so that the crop they turn
    (``crop_face`` with ``cfg.align == "eyes"``) has the eyes level by ``detector``'s own account.

    The crop's square, turned by the eye line and seen at ``LEVEL_MIN_SIDE`` px at least, is
    searched again; the eye line of the face nearest its centre is the angle still to turn, added
    until it is under ``LEVEL_TOLERANCE_DEGREES``, ``LEVEL_MAX_DETECTIONS`` detections at most.
    Where the square shows no face (or one without eyes), the angle found so far is kept: ``eyes``
    themselves when the first search finds none.
    """
    first = angle = _eye_angle(eyes)
    x0, y0, side = _square(box, cfg)
    size = max(side, LEVEL_MIN_SIDE)
    for _ in range(LEVEL_MAX_DETECTIONS):
        found = detector.detect_all(_aligned_crop(rgb, x0, y0, side, angle, size))
        if not found:
            break
        nearest = min(found, key=lambda d: math.hypot(d.box.x + d.box.w / 2 - size / 2, d.box.y + d.box.h / 2 - size / 2))
        if nearest.eyes is None:
            break
        residual = _eye_angle(nearest.eyes)
        angle += residual
        if abs(math.degrees(residual)) < LEVEL_TOLERANCE_DEGREES:
            break
    if angle == first:
        return eyes
    cos, sin = math.cos(angle - first), math.sin(angle - first)
    eyes = np.asarray(eyes, np.float64)
    middle = eyes.mean(axis=0)
    return ((eyes - middle) @ np.array([[cos, sin], [-sin, cos]]) + middle).astype(np.float32)


def _resize(square: np.ndarray, size: int) -> np.ndarray:
    """``square`` resized to ``(size, size)``: area averaging when shrinking, bilinear when enlarging."""
    side = square.shape[0]
    if side == size:
        return square
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interp)


def _eye_angle(eyes) -> float:
    """The angle in radians of the line from the subject's right eye to the left one, in image
    coordinates (y down): 0 for upright eyes, positive when the left eye is lower."""
    eyes = np.asarray(eyes, np.float64)
    if eyes.shape != (2, 2) or not np.isfinite(eyes).all():
        raise ValueError(f"eyes must be a finite (2, 2) array [[x, y] of the right eye, [x, y] of the left eye]. "
                         f"Received: {eyes.tolist()}")
    (rx, ry), (lx, ly) = eyes
    return math.atan2(ly - ry, lx - rx)


def _aligned_crop(rgb: np.ndarray, x0: int, y0: int, side: int, angle: float, size: int) -> np.ndarray:
    """The ``(size, size, 3)`` crop of the ``side``-pixel square at ``(x0, y0)`` of ``rgb``, the
    frame rotated by ``-angle`` about the square's centre first (black outside the frame).

    One affine warp maps each output pixel to the frame: the square's pixel ``q`` (as the
    upright crop indexes it) lies at ``centre + R(angle)·(q - centre)``. ``cv2.warpAffine`` has
    no area averaging, so a shrinking crop is warped at ``side`` pixels and then shrunk as the
    upright one is (a bilinear warp straight to ``size`` would alias: it samples 4 of the
    ``(side/size)²`` pixels each output pixel covers); an enlarging one is warped straight to
    ``size``, bilinear like the upright resize. At angle 0 the warp lands on whole pixels, so the
    crop is the upright one.
    """
    out = size if side <= size else side
    scale = side / out  # frame pixels per output pixel
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = x0 + side / 2 - 0.5, y0 + side / 2 - 0.5  # the square's centre, in pixel-centre coordinates
    # Output pixel u (per axis) is the square's sub-pixel scale·(u + 0.5) - 0.5 (cv2.resize's
    # mapping), i.e. scale·u + offset from the square's centre.
    offset = scale / 2 - side / 2
    matrix = np.array([[cos * scale, -sin * scale, cx + (cos - sin) * offset],
                       [sin * scale, cos * scale, cy + (sin + cos) * offset]])
    square = cv2.warpAffine(rgb, matrix, (out, out), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    return _resize(square, size)


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB ``(H, W, 3)`` uint8 image."""
    _check_rgb(rgb, "image")
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {rgb.shape}")
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """The RGB ``(H, W, 3)`` uint8 image of JPEG bytes."""
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"not a decodable JPEG ({len(data)} bytes starting {bytes(data[:8])!r})")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def close_frames(it):
    """Closes a frame iterator that can be closed (a decoder's generator)."""
    close = getattr(it, "close", None)
    if close is not None:
        close()


class FaceCrops:
    """``face_crops``' stream: iterating it yields ``(crop, face_found)`` per frame; once the
    first crop is out, ``tracking`` holds the recording's ``tracking.Tracking`` and ``main`` its
    main track."""

    def __init__(self, open_frames, detector, cfg, source):
        self._args = open_frames, detector, cfg, source
        self.tracking = self.main = None

    def __iter__(self) -> Iterator[tuple[np.ndarray, bool]]:
        from emotion_e2e.data import tracking  # noqa: PLC0415 - tracking builds on this module

        open_frames, detector, cfg, source = self._args
        self.tracking = tracking.track_faces(open_frames, detector, cfg, source)  # pass 1: boxes only
        self.main = tracking.main_track(self.tracking.tracks)
        if self.main is None:
            raise DataError(f"no face found in any of {self.tracking.num_frames} frames of {source}")
        for (crop_found,) in tracking.track_crops(open_frames, [self.main], self.tracking.num_frames, cfg, source):
            yield crop_found  # pass 2: (crop, face_found) of the main track


def face_crops(open_frames: Callable[[], Iterator[np.ndarray]], detector: FaceDetector, cfg: FaceConfig,
               source: str) -> FaceCrops:
    """``(crop, face_found)`` for every frame of one recording, in order; crop is ``(size, size, 3)`` uint8.

    One person is kept: the recording's faces are tracked (``tracking.track_faces`` with
    ``cfg.track``, on a first decoding that keeps boxes only), and every crop is cut from the main
    track's box (``tracking.main_track``) on a second decoding, so ``open_frames()``, which
    yields the recording's RGB frames, is called twice and no frame is ever buffered.
    ``face_found`` is 1 where the main track's face was detected; frames before its first
    detection take its first box, frames after its last its last box, frames in its gaps the
    box it carried. ``source`` names the recording in errors; DataError when no frame has a face.
    """
    return FaceCrops(open_frames, detector, cfg, source)


def check_frame(frame, source, index):
    """DataError naming ``source`` and the 1-based frame ``index`` unless ``frame`` is RGB ``(H, W, 3)`` uint8."""
    try:
        _check_rgb(frame)
    except ValueError as e:
        raise DataError(f"{source}, frame {index}: {e}") from None
