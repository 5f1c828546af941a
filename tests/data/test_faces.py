"""emotion_e2e.data.faces: detectors on a real face, crop geometry, JPEG, streaming face_crops."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import pathlib
import shutil
import subprocess
import sys
import weakref
import zipfile
from fractions import Fraction

import cv2
import numpy as np
import pytest

from emotion_e2e.config import FACE_DETECTORS, FaceConfig, TimeBase, TrackConfig
from emotion_e2e.data import faces, media
from emotion_e2e.data.faces import Box, Detection, FaceDetector, HaarDetector, crop_face, face_crops
from emotion_e2e.errors import ConfigError, DataError
from face_fixtures import (ASTRONAUT_FACE, DARK_BACKGROUND, PATCH_FACE, astronaut, face_patch, iou, noise_frame,
                           paste, portrait, shift)
from media_fixtures import write_av

CFG = FaceConfig()


@pytest.fixture(scope="module")
def haar():
    return HaarDetector(CFG)


@pytest.fixture(scope="module")
def mediapipe_detector():
    import mediapipe  # noqa: F401 - `make test` installs the mediapipe extra: this must run
    det = faces.MediaPipeDetector(CFG)
    yield det
    det.close()


@pytest.fixture(scope="module")
def yunet():
    return faces.YuNetDetector(CFG)


@pytest.fixture(params=["yunet", "haar", "mediapipe"])
def detector(request, yunet, haar, mediapipe_detector):
    """Each shipped detector in turn (all module-scoped: the cascade and the models load once)."""
    return {"yunet": yunet, "haar": haar, "mediapipe": mediapipe_detector}[request.param]


# ------------------------------------------------------------------ detectors

def test_haar_finds_the_astronaut(haar):
    box = haar.detect(astronaut())
    assert isinstance(box, Box)
    assert iou(box, ASTRONAUT_FACE) > 0.6, box


@pytest.mark.parametrize("x, y, background", [(0, 0, "black"), (600, 100, "gray"), (37, 91, "noise")])
def test_haar_box_is_scaled_back_from_a_720p_frame(haar, x, y, background):
    # 1280×720 is detected at 320×180; the face (2× the astronaut's) must come back in full-frame pixels.
    patch = cv2.resize(face_patch(), (600, 600), interpolation=cv2.INTER_LINEAR)
    frame = {"black": np.zeros((720, 1280, 3), np.uint8), "gray": np.full((720, 1280, 3), 128, np.uint8),
             "noise": noise_frame(1, 720, 1280)}[background]
    box = haar.detect(paste(frame, patch, x, y))
    assert box is not None and iou(box, shift(PATCH_FACE, x, y, scale=2)) > 0.5, box


@pytest.mark.parametrize("frame", [np.zeros((720, 1280, 3), np.uint8), noise_frame(0, 720, 1280),
                                   np.full((50, 40, 3), 200, np.uint8)])
def test_haar_finds_nothing_without_a_face(haar, frame):
    assert haar.detect(frame) is None


def test_detector_rejects_non_rgb_frames(haar):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        haar.detect(np.zeros((10, 10), np.uint8))


def test_haar_without_a_bundled_cascade_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setattr(cv2.data, "haarcascades", str(tmp_path) + "/")
    with pytest.raises(ConfigError, match="ships no Haar cascade.*opencv-python-headless"):
        HaarDetector(CFG)


def test_make_detector_builds_each_detector_and_yunet_is_the_default():
    assert FaceConfig().detector == "yunet"
    assert isinstance(faces.make_detector(CFG), faces.YuNetDetector)
    assert isinstance(faces.make_detector(FaceConfig(detector="haar")), HaarDetector)
    assert set(faces.DETECTORS) == set(FACE_DETECTORS)
    with pytest.raises(ValueError, match=r"detector must be one of \('yunet', 'haar', 'mediapipe'\)"):
        FaceConfig(detector="dlib")


def test_yunet_model_and_its_licence_are_package_data(tmp_path):
    # Read as the detector reads them (importlib.resources), not through a path.
    model = importlib.resources.files("emotion_e2e.data").joinpath("models", faces.YUNET_MODEL).read_bytes()
    assert len(model) == 232589
    assert hashlib.sha256(model).hexdigest() == faces.YUNET_SHA256 == (
        "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4")
    # And a wheel built from the sources installs both (a copy: the build writes beside them).
    root = pathlib.Path(faces.__file__).parents[2]
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "emotion_e2e", tmp_path / "emotion_e2e", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(tmp_path / "dist"), str(tmp_path)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("emotion_e2e-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert hashlib.sha256(z.read(f"emotion_e2e/data/models/{faces.YUNET_MODEL}")).hexdigest() == faces.YUNET_SHA256
        licence = z.read(f"emotion_e2e/data/models/{faces.YUNET_LICENSE}").decode()
    assert licence.startswith("MIT License") and "Copyright (c) 2020 Shiqi Yu" in licence


def test_yunet_refuses_a_model_file_that_is_not_the_2023mar_one(monkeypatch, tmp_path):
    (tmp_path / faces.YUNET_MODEL).write_bytes(b"truncated")
    monkeypatch.setattr(faces, "model_file", lambda name: tmp_path / name)
    with pytest.raises(ConfigError, match=r"is not the YuNet 2023mar model: sha256 .* \(9 bytes\)"):
        faces.YuNetDetector(CFG)
    monkeypatch.setattr(faces, "model_file", lambda name: tmp_path / "gone" / name)
    with pytest.raises(ConfigError, match="missing from the installed package"):
        faces.YuNetDetector(CFG)


def test_yunet_finds_the_astronaut_with_level_eyes_and_nothing_in_a_frame_without_a_face(yunet):
    (d,) = yunet.detect_all(astronaut())
    assert iou(d.box, ASTRONAUT_FACE) > 0.5 and 0.9 <= d.score <= 1, d
    (rx, ry), (lx, ly) = d.eyes
    # Her eyes at about (200, 102) and (247, 103): the subject's right eye on the image's left, level.
    assert abs(rx - 200) < 6 and abs(lx - 247) < 6 and abs(ry - 102) < 6 and abs(ry - ly) < 3, d.eyes
    for frame in (np.zeros((720, 1280, 3), np.uint8), noise_frame(0, 720, 1280), np.full((50, 40, 3), 200, np.uint8)):
        assert yunet.detect_all(frame) == []


def test_yunet_gives_the_largest_face_first_even_when_a_smaller_one_scores_higher(yunet):
    frame, large, small = two_faces()
    left = frame[:, :450].astype(np.float32)  # the large face at 30 % contrast: it scores lower
    frame[:, :450] = np.round(DARK_BACKGROUND + (left - DARK_BACKGROUND) * 0.3).astype(np.uint8)
    found = yunet.detect_all(frame)
    assert len(found) == 2 and iou(found[0].box, large) > 0.5 and iou(found[1].box, small) > 0.5, found
    assert found[0].score < found[1].score  # OpenCV orders them by score


def test_yunet_scales_boxes_and_eyes_back_to_the_full_frame_whatever_its_size(yunet):
    # The same face in frames of three sizes, one after the other (the network's input size changes):
    # 1280×720 is searched at 640×360, 1920×1080 at 640×360 too, 640×480 at full size.
    for (h, w), scale in [((720, 1280), 2), ((1080, 1920), 3), ((480, 640), 1)]:
        patch = cv2.resize(face_patch(), (300 * scale, 300 * scale), interpolation=cv2.INTER_LINEAR)
        x, y = w - 300 * scale - 10, h - 300 * scale - 10
        frame = paste(np.full((h, w, 3), DARK_BACKGROUND, np.uint8), patch, x, y)
        (d,) = yunet.detect_all(frame)
        assert iou(d.box, shift(PATCH_FACE, x, y, scale=scale)) > 0.5, (w, d)
        assert d.box.x < d.eyes[0, 0] < d.eyes[1, 0] < d.box.x + d.box.w and abs(d.eyes[0, 1] - d.eyes[1, 1]) < 3 * scale


def test_mediapipe_missing_names_the_extra(monkeypatch):
    # Runs whether or not mediapipe is installed: a None entry makes any import of it fail.
    for name in [m for m in sys.modules if m == "mediapipe" or m.startswith("mediapipe.")] + ["mediapipe"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ConfigError, match=r"pip install 'emotion_e2e\[mediapipe\]'"):
        faces.make_detector(FaceConfig(detector="mediapipe"))


def test_mediapipe_finds_the_astronaut(mediapipe_detector):
    assert iou(mediapipe_detector.detect(astronaut()), ASTRONAUT_FACE) > 0.5
    assert mediapipe_detector.detect(np.zeros((720, 1280, 3), np.uint8)) is None


def two_faces() -> tuple[np.ndarray, Box, Box]:
    """A 480×800 frame with two astronauts on a dark background, a large one (its face 150 px tall)
    and a small mirrored one (90 px), and their face boxes, large first."""
    frame = np.full((480, 800, 3), DARK_BACKGROUND, np.uint8)
    big = cv2.resize(face_patch(), (500, 500))  # the patch's 90 px face becomes 150 px
    frame[:, :450] = big[10:490, 20:470]
    frame[100:400, 480:780] = face_patch()[:, ::-1]
    scale = 500 / 300
    large = Box(round(PATCH_FACE.x * scale) - 20, round(PATCH_FACE.y * scale) - 10,
                round(PATCH_FACE.w * scale), round(PATCH_FACE.h * scale))
    small = Box(480 + 300 - PATCH_FACE.x - PATCH_FACE.w, 100 + PATCH_FACE.y, PATCH_FACE.w, PATCH_FACE.h)
    return frame, large, small


def test_every_face_is_found_largest_first_with_the_eyes_where_the_detector_gives_them(detector):
    frame, large, small = two_faces()
    found = detector.detect_all(frame)
    assert len(found) == 2, found
    assert iou(found[0].box, large) > 0.5 and iou(found[1].box, small) > 0.5, found
    assert detector.detect(frame) == found[0].box
    for d in found:
        if isinstance(detector, HaarDetector):  # the cascade gives neither confidence nor landmarks
            assert np.isnan(d.score) and d.eyes is None
            continue
        assert 0.5 <= d.score <= 1 and d.eyes.shape == (2, 2) and d.eyes.dtype == np.float32
        (rx, ry), (lx, ly) = d.eyes
        b = d.box
        # Both eyes inside the box's upper half, the subject's right eye on the image's left.
        assert b.x < rx < lx < b.x + b.w and b.y < min(ry, ly) and max(ry, ly) < b.y + b.h / 2, (d, b)
        assert abs(ry - ly) < 0.1 * b.h  # upright faces: level eyes
    assert detector.detect_all(np.full((480, 800, 3), DARK_BACKGROUND, np.uint8)) == []


# ------------------------------------------------------------------ small faces, dark background

# A well-lit frontal face of 1/10 to 1/2 of the frame height (webcam and interview framings)
# must be found. Both detectors once lost faces of 1/8 on a dark background in 98 % of frames.
SMALL_FACE_IOU = 0.5  # the detectors' boxes differ from the hand-labelled one by forehead and chin


def _found(box, face):
    """Whether a detector's ``box`` (or None) is the known ``face``."""
    return box is not None and iou(box, face) > SMALL_FACE_IOU


@pytest.mark.parametrize("fraction, height, width", [(1 / 8, 480, 640), (1 / 10, 480, 640), (1 / 10, 720, 1280)])
@pytest.mark.parametrize("at", [(0.5, 0.4), (0.1, 0.9), (0.85, 0.15)])
def test_both_detectors_find_a_small_face_on_a_dark_background(detector, fraction, height, width, at):
    frame, face = portrait(fraction, height, width, at)
    box = detector.detect(frame)
    assert _found(box, face), (box, face)


def test_haar_equalises_only_when_the_plain_image_has_no_face(haar, monkeypatch):
    calls = []
    equalize = cv2.equalizeHist
    monkeypatch.setattr(cv2, "equalizeHist", lambda gray: calls.append(1) or equalize(gray))
    frame, face = portrait(1 / 8)
    assert _found(haar.detect(frame), face) and not calls  # equalising first loses this face
    assert haar.detect(np.full((480, 640, 3), DARK_BACKGROUND, np.uint8)) is None and len(calls) == 1


def _dim(rgb, gain=0.15):
    """A badly under-exposed ``rgb``: grey levels scaled to 0..38."""
    return np.round(rgb * gain).astype(np.uint8)


def _washed_out(rgb, gain=0.15, level=230):
    """``rgb`` with its contrast squeezed towards a bright ``level`` (over-exposed, hazy)."""
    return np.clip(np.round(level + (rgb.astype(np.float32) - level) * gain), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("spoil", [_dim, _washed_out])
def test_haar_equalisation_fallback_finds_dim_and_washed_out_faces(haar, spoil, monkeypatch):
    frame = spoil(astronaut())
    assert iou(haar.detect(frame), ASTRONAUT_FACE) > 0.6
    monkeypatch.setattr(cv2, "equalizeHist", lambda gray: gray)  # without the fallback the face is lost
    assert haar.detect(frame) is None


@pytest.mark.parametrize("at", [(0.5, 0.4), (0.1, 0.9)])
def test_mediapipe_short_range_model_loses_what_the_full_range_model_finds(mediapipe_detector, at):
    # Why MediaPipeDetector uses the full-range model: on a 1/10 face the short-range one finds
    # nothing or a wrong box.
    frame, face = portrait(1 / 10, at=at)
    short = faces.MediaPipeDetector(CFG, model_selection=faces.MEDIAPIPE_SHORT_RANGE)
    try:
        box = short.detect(frame)
        assert not _found(box, face), box
        assert _found(mediapipe_detector.detect(frame), face)
    finally:
        short.close()
    with pytest.raises(ValueError, match="model_selection must be 0.*or 1.*Received: 2"):
        faces.MediaPipeDetector(CFG, model_selection=2)


@pytest.mark.parametrize("at", [(0.1, 0.9), (0.85, 0.15)])
def test_mediapipe_searches_square_tiles_of_a_wide_frame_without_a_face(mediapipe_detector, at, monkeypatch):
    # 1/12 of a 1280×720 frame's height is ~9 px in the model's letterboxed 192×192 input: too
    # small to find there, but not in a 720×720 tile. The right-hand tile starts at x = 560.
    frame, face = portrait(1 / 12, 720, 1280, at)
    assert _found(mediapipe_detector.detect(frame), face)
    monkeypatch.setattr(faces, "_square_tiles", lambda h, w: [])
    assert mediapipe_detector.detect(frame) is None


@pytest.mark.parametrize("h, w, count", [(360, 640, 2), (480, 640, 2), (640, 360, 2), (100, 301, 4), (100, 100, 0)])
def test_square_tiles_cover_the_frame_with_overlap(h, w, count):
    tiles = faces._square_tiles(h, w)
    assert len(tiles) == count
    side = min(h, w)
    covered = np.zeros((h, w), bool)
    for x0, y0, s in tiles:
        assert s == side and 0 <= x0 <= w - s and 0 <= y0 <= h - s
        covered[y0:y0 + s, x0:x0 + s] = True
    assert covered.all() or count == 0
    starts = sorted(x0 + y0 for x0, y0, _ in tiles)  # tiles run along the longer side only
    assert all(b - a <= side * (1 - faces.MEDIAPIPE_TILE_OVERLAP) for a, b in zip(starts, starts[1:]))


# Face heights (fractions of the frame height) of the H.264 test video, 3 frames each, the face
# moving between frames. write_av codes at qp 0; at crf 23-35 in 4:2:0 (what webcams write) every
# face was found too, and the benchmark measures crf 28.
VIDEO_FRACTIONS = (1 / 10, 1 / 8, 1 / 5, 1 / 3, 1 / 2)
VIDEO_POSITIONS = ((0.2, 0.3), (0.5, 0.5), (0.8, 0.7))


@pytest.fixture(scope="module")
def portrait_video(tmp_path_factory):
    """``{fraction: [(decoded frame, face Box), ...]}`` from a 640×480 25 fps H.264 video."""
    shots = [portrait(f, at=at) for f in VIDEO_FRACTIONS for at in VIDEO_POSITIONS]
    lead_in = np.full_like(shots[0][0], DARK_BACKGROUND)
    path = write_av(tmp_path_factory.mktemp("faces") / "portrait.mp4", [lead_in] + [f for f, _ in shots], Fraction(25))
    # Grid frame i covers (0.04·(i - 1), 0.04·i] and shows video frame i: the lead-in is never shown.
    decoded = list(media.video_frames(path, TimeBase(), num_frames=len(shots)))
    assert len(decoded) == len(shots) and decoded[0].shape == (480, 640, 3)
    n = len(VIDEO_POSITIONS)
    return {f: [(frame, box) for frame, (_, box) in zip(decoded[k * n:(k + 1) * n], shots[k * n:(k + 1) * n])]
            for k, f in enumerate(VIDEO_FRACTIONS)}


@pytest.mark.parametrize("fraction", VIDEO_FRACTIONS, ids=lambda f: f"1/{round(1 / f)}")
def test_both_detectors_find_every_face_of_a_real_video(detector, portrait_video, fraction):
    found = [_found(detector.detect(frame), face) for frame, face in portrait_video[fraction]]
    assert np.mean(found) == 1.0, found


# ------------------------------------------------------------------ crop geometry

def _rect_image(h=300, w=400, box=Box(100, 50, 40, 20)):
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (0, 0, 255)
    img[box.y:box.y + box.h, box.x:box.x + box.w] = 255
    return img, box


@pytest.mark.parametrize("box, top_left", [(Box(100, 50, 40, 20), (14, 4)), (Box(100, 50, 20, 40), (4, 14))])
def test_crop_is_a_square_centred_on_the_box(box, top_left):
    img, box = _rect_image(box=box)
    # side = 1.2 · max(w, h) = 48 = size: no resampling, so the geometry is exact.
    crop = crop_face(img, box, FaceConfig(size=48))
    white = np.argwhere((crop == 255).all(-1))
    assert crop.shape == (48, 48, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(white.min(0), top_left)  # row (48 - h) / 2, column (48 - w) / 2
    np.testing.assert_array_equal(white.max(0), np.array(top_left) + [box.h - 1, box.w - 1])
    assert (crop[0, 0] == (0, 0, 255)).all()  # the rest is the image, not padding


def test_crop_is_resized_keeping_the_centre():
    img, box = _rect_image()
    crop = crop_face(img, box, FaceConfig(size=96))  # 48 → 96: upscaled 2×
    white = np.argwhere((crop > 200).all(-1))
    assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(white.mean(0), [47.5, 47.5], atol=0.6)
    np.testing.assert_allclose(white.max(0) - white.min(0) + 1, [40, 80], atol=2)
    small = crop_face(img, box, FaceConfig(size=24, margin=0.2))  # 48 → 24: downscaled
    assert small.shape == (24, 24, 3)


def test_crop_pads_outside_the_frame_with_black():
    img = np.full((100, 100, 3), 255, np.uint8)
    crop = crop_face(img, Box(0, 0, 40, 40), FaceConfig(size=48))  # square (-4, -4)..(44, 44)
    assert (crop[:4] == 0).all() and (crop[:, :4] == 0).all()
    assert (crop[4:, 4:] == 255).all()
    # A box entirely off the frame (possible from MediaPipe) gives an all-black crop, not an error.
    assert (crop_face(img, Box(500, 500, 40, 40), FaceConfig(size=48)) == 0).all()


# ------------------------------------------------------------------ JPEG

def test_jpeg_round_trip_keeps_colours_and_channel_order():
    red = np.zeros((96, 96, 3), np.uint8)
    red[..., 0] = 255
    back = faces.decode_jpeg(faces.encode_jpeg(red, 95))
    assert back.shape == red.shape and back.dtype == np.uint8
    assert back[..., 0].min() > 240 and back[..., 1:].max() < 15
    face = crop_face(astronaut(), ASTRONAUT_FACE, CFG)
    data = faces.encode_jpeg(face, 95)
    assert data[:2] == b"\xff\xd8"
    assert np.abs(faces.decode_jpeg(data).astype(int) - face).mean() < 3


def test_decode_jpeg_rejects_garbage():
    with pytest.raises(DataError, match="not a decodable JPEG"):
        faces.decode_jpeg(b"not a jpeg")


# ------------------------------------------------------------------ face_crops

H, W = 360, 640
FACE_AT = {3: (40, 20), 4: (70, 25), 5: (100, 30), 6: (130, 35)}  # 1-based frame → paste offset
# Full detection on every frame: the stub detectors below count calls as frames.
EVERY_FRAME = dataclasses.replace(CFG, track=TrackConfig(detect_every=1))


def _frame(i):
    """Frame i of an 8-frame recording: noise, with the astronaut's face in frames 3..6 only."""
    frame = noise_frame(i, H, W)
    return paste(frame, face_patch(), *FACE_AT[i]) if i in FACE_AT else frame


class Opener:
    """``open_frames`` for face_crops: counts how often the recording is (re-)opened."""

    def __init__(self, make, n):
        self.make, self.n, self.calls = make, n, 0

    def __call__(self):
        self.calls += 1
        return (self.make(i) for i in range(1, self.n + 1))


def test_face_crops_holds_boxes_before_and_after_the_face(haar):
    opener = Opener(_frame, 8)
    out = list(face_crops(opener, haar, EVERY_FRAME, "video x.mp4 (recording r)"))
    assert [found for _, found in out] == [0, 0, 1, 1, 1, 1, 0, 0]
    assert opener.calls == 2  # tracked on the first decoding, cropped from the second: nothing buffered
    boxes = {i: haar.detect(_frame(i)) for i in FACE_AT}
    for i, (x, y) in FACE_AT.items():
        assert iou(boxes[i], shift(PATCH_FACE, x, y)) > 0.5, (i, boxes[i])
    expected_box = {1: boxes[3], 2: boxes[3], 7: boxes[6], 8: boxes[6], **boxes}
    for i, (crop, _) in enumerate(out, start=1):
        assert crop.shape == (96, 96, 3) and crop.dtype == np.uint8
        np.testing.assert_array_equal(crop, crop_face(_frame(i), expected_box[i], CFG), err_msg=f"frame {i}")


def test_face_crops_finds_the_face_between_full_detections_in_a_window(haar):
    # The default detects in the whole frame every 5th frame: frames 2-4 are searched around the track.
    assert CFG.track.detect_every > 3
    opener = Opener(lambda i: _frame(i + 2), 4)
    crops = face_crops(opener, haar, CFG, "r")
    assert [found for _, found in crops] == [1, 1, 1, 1]
    assert opener.calls == 2 and crops.tracking.full_detections == 1


def test_face_crops_without_any_face_is_an_error(haar):
    opener = Opener(lambda i: noise_frame(i, H, W), 5)
    with pytest.raises(DataError, match=r"no face found in any of 5 frames of video /x/y\.mp4 \(recording train_1\)"):
        list(face_crops(opener, haar, CFG, "video /x/y.mp4 (recording train_1)"))
    assert opener.calls == 1


class StubDetector(FaceDetector):
    """A pluggable detector: a fixed box in the frames listed in ``hits`` (1-based), counted by call."""

    def __init__(self, hits, box=Box(10, 12, 20, 16)):
        self.hits, self.box, self.calls = set(hits), box, 0

    def detect_all(self, rgb):
        self.calls += 1
        return [Detection(self.box, 0.9)] if self.calls in self.hits else []


def test_detector_interface_is_pluggable():
    with pytest.raises(TypeError):
        FaceDetector()
    frames = [np.full((40, 50, 3), i, np.uint8) for i in range(1, 6)]
    cfg = dataclasses.replace(EVERY_FRAME, size=24)
    out = list(face_crops(lambda: iter(frames), StubDetector({2, 4}), cfg, "stub"))
    assert [f for _, f in out] == [False, True, False, True, False]
    for frame, (crop, _) in zip(frames, out):
        np.testing.assert_array_equal(crop, crop_face(frame, Box(10, 12, 20, 16), cfg))


def test_face_crops_streams_in_constant_memory():
    n, first_face = 2000, 10
    alive, stats = [0], {"max_alive": 0, "pulled": 0}

    def gone():
        alive[0] -= 1

    def make(i):
        frame = np.full((32, 32, 3), i % 256, np.uint8)
        weakref.finalize(frame, gone)
        alive[0] += 1
        stats["max_alive"] = max(stats["max_alive"], alive[0])
        stats["pulled"] += 1
        return frame

    opener = Opener(make, n)
    # A face from frame 10 on, missed in every 7th frame.
    det = StubDetector({i for i in range(first_face, n + 1) if i % 7})
    got = 0
    for crop, found in face_crops(opener, det, dataclasses.replace(EVERY_FRAME, size=16), "long"):
        got += 1
        # Every frame is pulled (and dropped) by the tracking pass before anything is handed
        # out; then the recording is decoded again, one frame pulled per crop handed out.
        assert stats["pulled"] == n + got
        assert crop.shape == (16, 16, 3)
    assert got == n and opener.calls == 2
    assert stats["pulled"] == 2 * n
    assert stats["max_alive"] <= 3, stats


def test_face_crops_fails_if_reopening_gives_fewer_frames():
    calls = []

    def open_frames():
        calls.append(1)
        return iter([np.zeros((8, 8, 3), np.uint8)] * (4 if len(calls) == 1 else 1))

    with pytest.raises(DataError, match="re-opening src gave 1 frames, but the first pass decoded 4; the decoder "
                                        "is not deterministic"):
        list(face_crops(open_frames, StubDetector({4}), dataclasses.replace(EVERY_FRAME, size=8), "src"))


def test_face_crops_names_source_and_frame_of_a_bad_frame():
    frames = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8)]
    with pytest.raises(DataError, match=r"src, frame 2: frame must be an \(H, W, 3\) uint8"):
        list(face_crops(lambda: iter(frames), StubDetector({1}), FaceConfig(size=8), "src"))
