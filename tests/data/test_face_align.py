"""Crop alignment (FaceConfig.align, docs/design.md §3): the square turned so that the eyes lie level."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from emotion_e2e import export
from emotion_e2e.config import FACE_ALIGNMENTS, FaceConfig, TrackConfig, TrainConfig, from_dict
from emotion_e2e.data import convert, faces, metadata
from emotion_e2e.data.faces import Box, crop_face
from emotion_e2e.errors import ConfigError, DataError
from emotion_e2e.predict import Predictor
from face_fixtures import DARK_BACKGROUND, PATCH_FACE, astronaut, face_patch, noise_frame
from records import FakeRecording
from test_convert import CFG, corpus

EYES = dataclasses.replace(FaceConfig(), align="eyes")
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)
# The astronaut's eyes in the 512×512 photo (her right eye on the image's left), as YuNet finds
# them upright (test_faces: within 6 px of these).
ASTRONAUT_EYES = np.array([[200.0, 102.0], [247.0, 103.0]])
# Her pupils: the centroids of the darkest tenth of the pixels about those points (the markers
# measure roll; her eye line is 3.0° off level, 1.8° more than the landmarks').
PUPILS = np.array([[201.6, 99.6], [247.6, 102.0]])


def upright_crop(rgb, box, cfg):
    """crop_face as it was before alignment existed, copied verbatim: the reference for align="none"."""
    H, W = rgb.shape[:2]
    side = max(1, round((1 + cfg.margin) * max(box.w, box.h)))
    x0 = round(box.x + box.w / 2 - side / 2)
    y0 = round(box.y + box.h / 2 - side / 2)
    square = np.zeros((side, side, 3), np.uint8)
    xa, xb, ya, yb = max(x0, 0), min(x0 + side, W), max(y0, 0), min(y0 + side, H)
    if xa < xb and ya < yb:
        square[ya - y0:yb - y0, xa - x0:xb - x0] = rgb[ya:yb, xa:xb]
    if side == cfg.size:
        return square
    interp = cv2.INTER_AREA if side > cfg.size else cv2.INTER_LINEAR
    return cv2.resize(square, (cfg.size, cfg.size), interpolation=interp)


def roll_degrees(eyes) -> float:
    """The eye line's angle in degrees, image coordinates (y down): positive when the left eye is lower."""
    (rx, ry), (lx, ly) = eyes
    return math.degrees(math.atan2(ly - ry, lx - rx))


def centroid(crop, colour) -> np.ndarray:
    """``[x, y]`` of the pixels close to ``colour`` (a painted marker) in ``crop``."""
    mask = (np.abs(crop.astype(int) - colour) < 80).all(-1)
    assert mask.any(), f"no {colour} marker in the crop"
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def mark(frame, points_and_colours, radius=2):
    frame = frame.copy()
    for (x, y), colour in points_and_colours:
        cv2.circle(frame, (round(x), round(y)), radius, colour, -1)
    return frame


def rotate_points(points, centre, degrees):
    """``points`` turned as cv2.getRotationMatrix2D(centre, degrees, 1) turns an image (counter-clockwise)."""
    m = cv2.getRotationMatrix2D(tuple(map(float, centre)), degrees, 1.0)
    return np.asarray(points, np.float64) @ m[:, :2].T + m[:, 2]


# ------------------------------------------------------------------ align="none" is the old crop


@pytest.mark.parametrize("box", [Box(100, 80, 60, 70), Box(-10, -20, 150, 140), Box(280, 200, 50, 60),
                                 Box(150, 100, 30, 35), Box(500, 500, 40, 40)])
@pytest.mark.parametrize("size", [96, 40])
def test_unaligned_crops_are_byte_identical_to_the_old_crop(box, size):
    frame = noise_frame(3, 240, 320)
    cfg = FaceConfig(size=size)
    expected = upright_crop(frame, box, cfg)
    eyes = np.array([[box.x + 5.0, box.y + 9.0], [box.x + 20.0, box.y + 2.0]])  # rolled: ignored by "none"
    np.testing.assert_array_equal(crop_face(frame, box, cfg), expected)
    np.testing.assert_array_equal(crop_face(frame, box, cfg, eyes), expected)
    # align="eyes" without eyes (a detector without landmarks would have none) is the upright crop too
    np.testing.assert_array_equal(crop_face(frame, box, dataclasses.replace(EYES, size=size)), expected)


@pytest.mark.parametrize("box", [Box(100, 80, 60, 70), Box(-10, -20, 150, 140), Box(500, 500, 40, 40)])
def test_level_eyes_give_the_upright_crop_when_it_shrinks(box):
    # 1.2 × 70 = 84 and more → 40: warped at whole pixels, then shrunk as the upright crop is
    frame = noise_frame(4, 240, 320)
    level = np.array([[box.x + 5.0, box.y + 9.0], [box.x + 25.0, box.y + 9.0]])
    cfg = dataclasses.replace(EYES, size=40)
    np.testing.assert_array_equal(crop_face(frame, box, cfg, level), upright_crop(frame, box, cfg))


def test_an_upright_face_gives_nearly_the_same_crop_either_way():
    # Her eyes are 1.2° off level: turning by that moves the crop's corners by about a pixel,
    # which changes it less than moving the box by one pixel does.
    img, box = astronaut(), Box(180, 75, 90, 90)
    assert 0 < roll_degrees(ASTRONAUT_EYES) < 1.5
    for size in (96, 192):  # 108 → 96 shrinks, 108 → 192 enlarges (one bilinear warp)
        cfg = FaceConfig(size=size)
        upright = crop_face(img, box, cfg).astype(int)
        aligned = crop_face(img, box, dataclasses.replace(cfg, align="eyes"), ASTRONAUT_EYES)
        moved = crop_face(img, box._replace(x=box.x + 1), cfg)
        assert np.abs(upright - aligned).mean() < 0.8 * np.abs(upright - moved).mean(), size


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize("degrees", [20, -20, 35, -35, 90, -120, 180])
# Odd sides: the boxes' centre pixels (x + (w - 1) / 2, ...) are whole, where a marker can sit.
@pytest.mark.parametrize("size, box", [(96, Box(200, 150, 101, 121)), (192, Box(40, 30, 71, 61))])
def test_aligned_crop_has_level_eyes_and_the_upright_crops_centre_and_side(degrees, size, box):
    # Markers: the eyes 40 px apart about the box's centre, rolled, and the centre itself.
    centre = np.array([box.x + (box.w - 1) / 2, box.y + (box.h - 1) / 2])
    eyes = rotate_points(centre + [[-20, -10], [20, -10]], centre, degrees).round()  # where markers can sit
    frame = mark(np.full((300, 400, 3), DARK_BACKGROUND, np.uint8),
                 [(eyes[0], RED), (eyes[1], BLUE), (centre, GREEN)])
    cfg = dataclasses.replace(EYES, size=size)
    crop = crop_face(frame, box, cfg, eyes.astype(np.float32))
    right, left, middle = centroid(crop, RED), centroid(crop, BLUE), centroid(crop, GREEN)
    assert abs(roll_degrees([right, left])) < 1, (right, left)
    assert right[0] < left[0]  # not flipped: the subject's right eye stays on the image's left
    side = round(1.2 * max(box.w, box.h))
    scale = size / side  # the same side as the upright crop
    np.testing.assert_allclose(middle, [(size - 1) / 2] * 2, atol=0.5 + scale / 2)  # the same centre
    np.testing.assert_allclose(np.linalg.norm(left - right), 40 * scale, rtol=0.05)
    # ... and where the upright crop has its centre marker
    np.testing.assert_allclose(centroid(upright_crop(frame, box, cfg), GREEN), middle, atol=0.5 + scale / 2)


def test_aligned_crop_pads_outside_the_frame_with_black():
    frame = np.full((100, 100, 3), 255, np.uint8)
    eyes = np.array([[10.0, 10.0], [30.0, 30.0]])  # rolled 45°
    crop = crop_face(frame, Box(0, 0, 40, 40), dataclasses.replace(EYES, size=48), eyes)
    assert (crop[0, 0] == 0).all() and (crop[24, 24] == 255).all()
    assert (crop_face(frame, Box(500, 500, 40, 40), EYES, eyes) == 0).all()


@pytest.mark.parametrize("eyes", [np.zeros((3, 2)), np.array([[1.0, np.nan], [2.0, 3.0]])])
def test_aligned_crop_refuses_malformed_eyes(eyes):
    with pytest.raises(ValueError, match="eyes must be a finite"):
        crop_face(noise_frame(0, 50, 50), Box(10, 10, 20, 20), EYES, eyes)


# ------------------------------------------------------------------ with the detector's eyes


@pytest.fixture(scope="module")
def yunet():
    return faces.make_detector(FaceConfig())


@pytest.fixture(scope="module")
def mediapipe_detector():
    import mediapipe  # noqa: F401 - `make test` installs the mediapipe extra: this must run
    det = faces.make_detector(FaceConfig(detector="mediapipe"))
    yield det
    det.close()


def rolled_portrait(degrees, scale, side=640):
    """A ``side``² frame with ``face_patch`` scaled by ``scale`` and rolled by ``degrees``
    (counter-clockwise) about her face's centre, which lands in the frame's middle; and her
    pupils there."""
    c = (PATCH_FACE.x + PATCH_FACE.w / 2, PATCH_FACE.y + PATCH_FACE.h / 2)
    m = cv2.getRotationMatrix2D(c, degrees, scale)
    m[:, 2] += (side / 2 - c[0], side / 2 - c[1])
    frame = cv2.warpAffine(face_patch(), m, (side, side), borderValue=(DARK_BACKGROUND,) * 3)
    patch_eyes = PUPILS - (60, 0)  # face_fixtures.PATCH_ORIGIN
    return frame, patch_eyes @ m[:, :2].T + m[:, 2]


def aligned_and_upright_rolls(detector, frame, true_eyes) -> dict:
    """``{align: roll in degrees}`` of the crops of ``frame`` by ``detector``'s face and eyes
    (levelled by ``faces.level_eyes`` as ``tracking.track_faces`` levels them for align="eyes"),
    measured on markers painted on the true eyes."""
    (d,) = detector.detect_all(frame)
    eyes = faces.level_eyes(frame, d.box, d.eyes, detector, EYES) if detector.level_on_turned_square else d.eyes
    marked = mark(frame, [(true_eyes[0], RED), (true_eyes[1], BLUE)], radius=3)
    rolls = {}
    for align in FACE_ALIGNMENTS:
        crop = crop_face(marked, d.box, dataclasses.replace(EYES, align=align), eyes)
        rolls[align] = roll_degrees([centroid(crop, RED), centroid(crop, BLUE)])
    assert abs(rolls["none"] - roll_degrees(true_eyes)) < 1.5, rolls  # the upright crop keeps the roll
    return rolls


@pytest.mark.parametrize("degrees", [20, -20])
def test_mediapipe_eyes_level_a_rolled_face(mediapipe_detector, degrees):
    # The face 180 px tall, rolled ±20°: the aligned crop is level within 3°, the upright one not.
    rolls = aligned_and_upright_rolls(mediapipe_detector, *rolled_portrait(degrees, 2))
    assert abs(rolls["none"]) > 15 and abs(rolls["eyes"]) < 3, rolls


@pytest.mark.parametrize("degrees", [20, -20])
def test_yunet_eyes_level_a_rolled_face(yunet, degrees):
    # The face 180 px tall, rolled ±20° (her pupils at -17° and 23°). YuNet's eye line on the
    # frame turns by 13° and 23°, which leaves the crop 4° off level at 20°; levelled on the
    # turned square (faces.level_eyes), the crop is level within 3°.
    frame, pupils = rolled_portrait(degrees, 2)
    rolls = aligned_and_upright_rolls(yunet, frame, pupils)
    assert abs(rolls["none"]) > 15 and abs(rolls["eyes"]) < 3, rolls


def test_level_eyes_keeps_the_eyes_where_the_turned_square_shows_no_face(yunet):
    frame = noise_frame(5, 240, 320)
    eyes = np.array([[120.0, 100.0], [160.0, 110.0]], np.float32)
    assert faces.level_eyes(frame, Box(100, 80, 80, 80), eyes, yunet, EYES) is eyes


# ------------------------------------------------------------------ config


def test_align_defaults_to_none_and_checks_its_value_and_detector():
    assert FaceConfig().align == "none" and FACE_ALIGNMENTS == ("none", "eyes")
    for detector in ("yunet", "mediapipe"):
        assert FaceConfig(detector=detector, align="eyes").align == "eyes"
    with pytest.raises(ValueError, match=r"align must be one of \('none', 'eyes'\). Received: align='level'"):
        FaceConfig(align="level")
    with pytest.raises(ValueError, match="align='eyes' needs the eye landmarks of detector yunet or mediapipe; "
                                         "haar gives none"):
        FaceConfig(detector="haar", align="eyes")


def test_a_face_dict_saved_before_align_existed_reads_as_none():
    old = {"size": 96, "margin": 0.2, "jpeg_quality": 95, "detector": "haar", "detect_max_side": 640}
    assert from_dict(FaceConfig, old) == FaceConfig(detector="haar", align="none")
    assert dataclasses.asdict(from_dict(FaceConfig, {**old, "detector": "yunet", "align": "eyes"}))["align"] == "eyes"


# ------------------------------------------------------------------ recorded with the data and the export


def run(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CI="true")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, env=env)


@pytest.fixture(scope="module")
def eyes_corpus(tmp_path_factory):
    """A tiny demo conversion by ``prepare --face_align=eyes``."""
    out = tmp_path_factory.mktemp("eyes") / "demo"
    r = run("emotion_e2e.prepare", "--source=demo", f"--output_dir={out}", "--demo_train=1", "--demo_dev=1",
            "--demo_seconds=0.4", "--face_align=eyes")
    assert r.returncode == 0, r.stderr
    return out


def test_prepare_records_the_alignment_and_refuses_eyes_with_haar(eyes_corpus, tmp_path):
    meta = json.loads((eyes_corpus / "metadata.json").read_text())
    assert meta["face"] == dataclasses.asdict(EYES) and meta["face"]["align"] == "eyes"
    r = run("emotion_e2e.prepare", "--source=demo", f"--output_dir={tmp_path / 'haar'}", "--face_detector=haar",
            "--face_align=eyes")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1] == (
        "error: FaceConfig: align='eyes' needs the eye landmarks of detector yunet or mediapipe; haar gives none. "
        "Received: detector='haar', align='eyes'"), r.stderr
    assert not (tmp_path / "haar").exists()


def test_prepare_offers_every_alignment_and_none_by_default():
    from absl import flags  # noqa: PLC0415

    from emotion_e2e import prepare  # noqa: PLC0415 - its flags are module-level

    assert flags.FLAGS[prepare._ALIGN.name].parser.enum_values == list(FACE_ALIGNMENTS)
    assert prepare._ALIGN.default == FaceConfig().align == "none"


def description(data_dir) -> dict:
    """The export's description of a (never trained) run on ``data_dir``."""
    return export.run_description(TrainConfig(data_dir=str(data_dir)), str(data_dir), "best")


def test_the_export_and_predict_crop_as_the_training_data_was_cropped(eyes_corpus):
    info = description(eyes_corpus)
    assert info["face"]["align"] == "eyes"
    predictor = Predictor(None, json.loads(json.dumps(info)), "models/1")  # as read back from emotion_e2e.json
    assert predictor.convert_config().face == EYES
    assert predictor.convert_config("mediapipe").face == dataclasses.replace(EYES, detector="mediapipe")
    with pytest.raises(ConfigError, match=r"^--face_detector=haar: the training data's face crops of models/1 were "
                                          r"cut with align='eyes': FaceConfig: align='eyes' needs the eye landmarks"):
        predictor.convert_config("haar")
    # an export made before alignment existed has no "align": its crops were upright
    del info["face"]["align"]
    assert Predictor(None, info, "models/1").convert_config("haar").face == FaceConfig(detector="haar")


def test_metadata_written_before_alignment_existed_reads_as_unaligned(tmp_path):
    convert.convert(corpus(), CFG, str(tmp_path))
    meta = json.loads((tmp_path / "metadata.json").read_text())
    del meta["face"]["align"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    assert metadata.read(str(tmp_path))["face"] == dataclasses.asdict(CFG.face)
    assert export.face_settings(TrainConfig(data_dir=str(tmp_path))) == (FaceConfig(), None)
    # its partitions are kept by a conversion with the same (unaligned) settings, refused by an aligned one
    with pytest.raises(DataError, match=r"were converted with face .*'align': 'none'.*; this run has face "
                                        r".*'align': 'eyes'"):
        convert.convert([FakeRecording("dev_a", "dev", index=2)], dataclasses.replace(CFG, face=EYES), str(tmp_path))
    meta = convert.convert([FakeRecording("dev_a", "dev", index=2)], CFG, str(tmp_path))
    assert sorted(meta["partitions"]) == ["dev", "test", "train"] and meta["face"]["align"] == "none"


@pytest.mark.parametrize("degrees", [20, -20])
@pytest.mark.parametrize("name", ["mediapipe", "yunet"])
def test_face_crops_turn_every_frame_by_the_main_tracks_eyes_held_where_it_was_not_found(request, name, degrees):
    # The recording: the face rolled in frames 2-4 and 7; frames 1, 5 and 6 dark on the tracking
    # pass (no face: before the first detection, then a gap). The crop pass decodes the face, with
    # markers on her true eyes, in every frame, so the crops of the frames without a detection
    # show which eyes they were turned by: the first detection's, then the last one's.
    frame, true_eyes = rolled_portrait(degrees, 2)
    dark = np.full_like(frame, DARK_BACKGROUND)
    marked = mark(frame, [(true_eyes[0], RED), (true_eyes[1], BLUE)], radius=3)
    tracked = [dark, frame, frame, frame, dark, dark, frame]
    passes = []

    def open_frames():
        passes.append(len(passes) + 1)
        return iter(tracked if len(passes) == 1 else [marked] * len(tracked))

    detector = request.getfixturevalue({"mediapipe": "mediapipe_detector", "yunet": "yunet"}[name])
    for align in FACE_ALIGNMENTS:
        passes.clear()
        cfg = FaceConfig(detector=name, align=align, track=TrackConfig(detect_every=1))
        out = list(faces.face_crops(open_frames, detector, cfg, "clip"))
        assert passes == [1, 2] and [found for _, found in out] == [False, True, True, True, False, False, True]
        rolls = [roll_degrees([centroid(crop, RED), centroid(crop, BLUE)]) for crop, _ in out]
        if align == "eyes":
            assert max(map(abs, rolls)) < 3, rolls
        else:
            assert min(map(abs, rolls)) > 15, rolls
