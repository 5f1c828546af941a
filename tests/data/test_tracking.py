"""emotion_e2e.data.tracking: association and prediction on hand-made detections, then face
tracks in H.264 clips of real faces (the astronaut and recoloured, mirrored, scaled copies)
that move, cross, hide each other, leave and come back; and the converter keeping one person."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from emotion_e2e.config import FaceConfig, TimeBase, TrackConfig
from emotion_e2e.data import convert, faces, media, sources, tracking
from emotion_e2e.data.faces import Box, Detection, HaarDetector
from emotion_e2e.errors import DataError
from face_fixtures import draw_faces, face_sprite, iou, portrait
from media_fixtures import write_av

CFG = FaceConfig()
EVERY_FRAME = TrackConfig(detect_every=1)


def tracked(**track):
    """``CFG`` with the face-track settings ``track``."""
    return dataclasses.replace(CFG, track=TrackConfig(**track))
H, W, N = 360, 480, 50  # the clips: 2 s at 25 fps


def det(x, y, w=40, h=40, score=math.nan):
    return Detection(Box(x, y, w, h), score)


def run(sequence, cfg=EVERY_FRAME):
    """Tracks of a hand-made detection sequence: one list of Detections per frame."""
    tracker = tracking.Tracker(cfg)
    for detections in sequence:
        tracker.step(detections)
    return tracker.finish()


# ------------------------------------------------------------------ association and prediction

def test_a_detection_overlapping_two_tracks_goes_to_the_closer_prediction():
    # Two faces side by side, then one detection between them, nearer the right one: the right
    # track takes it, the left one is carried at its prediction (not found) and lives on.
    tracks = run([[det(100, 100), det(150, 100)], [det(100, 100), det(150, 100)], [det(135, 100)],
                  [det(100, 100), det(150, 100)]])
    assert [t.id for t in tracks] == [1, 2]
    left, right = tracks
    assert left.found.tolist() == [True, True, False, True] and right.found.tolist() == [True] * 4
    assert tuple(left.boxes[2]) == (100, 100, 40, 40) and tuple(right.boxes[2]) == (135, 100, 40, 40)


def test_association_is_the_best_total_overlap_and_refuses_weak_pairs():
    predicted = [Box(0, 0, 40, 40), Box(30, 0, 40, 40)]
    # Greedy would give detection 0 (IoU 0.6 with track 0, 0.82 with track 1) to track 1 and
    # leave track 0 with a poor one; the assignment maximises the total.
    detections = [det(26, 0), det(4, 0)]
    assert sorted(tracking.associate(predicted, detections, 0.3)) == [(0, 1), (1, 0)]
    assert tracking.associate(predicted, [det(60, 0)], 0.3) == []  # IoU 0.14 with track 1: no pair
    assert tracking.associate([], detections, 0.3) == [] and tracking.associate(predicted, [], 0.3) == []


def test_a_track_missed_for_more_than_max_gap_frames_ends_and_its_face_gets_a_new_id():
    cfg = TrackConfig(detect_every=1, max_gap=3)
    face = [det(100, 100)]
    # Back after 3 missing frames: the same track, the gap carried; after 4: a new track.
    tracks = run([face, face, [], [], [], face, face, [], [], [], [], face, []], cfg)
    assert [(t.id, t.first, t.last) for t in tracks] == [(1, 1, 7), (2, 12, 12)]
    assert tracks[0].found.tolist() == [True, True, False, False, False, True, True]
    assert tracks[0].box(5) == Box(100, 100, 40, 40)  # a still face: the carried box stays
    # Outside its life a track holds its first and last boxes and is not found.
    assert tracks[1].box(1) == tracks[1].box(13) == Box(100, 100, 40, 40)
    assert not tracks[1].found_at(13) and not tracks[1].found_at(11) and tracks[1].found_at(12)


def test_a_carried_box_moves_at_the_tracks_velocity_and_keeps_its_size():
    # Moving 10 px right and growing 2 px a frame, then missed: the centre goes on, the size
    # grows one frame more and is held.
    tracks = run([[det(100 + 10 * k, 100, 40 + 2 * k, 40 + 2 * k)] for k in range(4)] + [[], [], []])
    (t,) = tracks
    assert t.last == 4  # the carried frames after the last detection are not part of its life
    live = tracking.Tracker(EVERY_FRAME)
    for k in range(4):
        live.step([det(100 + 10 * k, 100, 40 + 2 * k, 40 + 2 * k)])
    cx = 130 + 23 + 11 * np.arange(1, 4)  # the last centre (130 + 46 / 2) plus 11 px a frame (10 + 2 / 2)
    for k, frame in enumerate((5, 6, 7)):
        (b,) = live.predicted(frame)
        assert (b.w, b.h) == (48, 48) and b.x + b.w / 2 == pytest.approx(cx[k], abs=1), (frame, b)


def test_crossing_paths_keep_their_ids_with_motion_prediction():
    # Two equal faces moving towards each other on the same line, one hiding the other for 3
    # frames: the nearest last box would swap them after they cross; the prediction does not.
    sequence = []
    for k in range(16):
        a, b = 20 + 12 * k, 200 - 12 * k
        hidden = 6 <= k <= 8
        sequence.append([det(a, 100)] if hidden else [det(a, 100), det(b, 104)])
    tracks = run(sequence)
    assert len(tracks) == 2
    for t, start, step in ((tracks[0], 20, 12), (tracks[1], 200, -12)):
        xs = t.boxes[:, 0]
        np.testing.assert_allclose(xs, start + step * np.arange(16), atol=2)


def test_main_track_is_the_most_found_then_the_larger():
    small_long = run([[det(10, 10, 20, 20)]] * 6)[0]
    big_short = dataclasses.replace(run([[det(200, 10, 80, 80)]] * 5)[0], id=2)
    big_equal = dataclasses.replace(run([[det(200, 10, 80, 80)]] * 6)[0], id=3)
    assert tracking.main_track([small_long, big_short]) is small_long
    assert tracking.main_track([small_long, big_equal]) is big_equal
    assert tracking.main_track([]) is None


@pytest.mark.parametrize("kwargs, match", [({"detect_every": 0}, "detect_every >= 1"),
                                           ({"max_gap": -1}, "max_gap >= 0"),
                                           ({"search_scale": 0.5}, "search_scale >= 1"),
                                           ({"min_iou": 1.0}, "0 < min_iou < 1"),
                                           ({"smoothing": 0.0}, "0 < smoothing <= 1"),
                                           ({"main_track": "largest"}, "main_track must be one of")])
def test_track_config_is_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrackConfig(**kwargs)


# ------------------------------------------------------------------ real faces in H.264 clips

B_TINT = (1.0, 0.8, 1.3)  # a bluer copy: blue over green in its crops ~1.6 against ~1
A = face_sprite(72)  # the astronaut
B = face_sprite(56, mirror=True, tint=B_TINT)  # smaller, mirrored, bluer


def clip(tmp_path_factory, name, scenes):
    """``(path, [per frame: the true face boxes])`` of an H.264 clip whose frame k shows
    ``draw_faces(H, W, scenes[k])``; and the decoded frames."""
    drawn = [draw_faces(H, W, placed) for placed in scenes]
    frames = [f for f, _ in drawn]
    # Grid frame i shows video frame i: the lead-in frame 0 is never shown (test_faces.portrait_video).
    path = write_av(tmp_path_factory.mktemp("tracks") / f"{name}.mp4", [frames[0]] + frames, Fraction(25))
    decoded = list(media.video_frames(path, TimeBase(), len(frames)))
    assert len(decoded) == len(frames)
    return path, [b for _, b in drawn], decoded


@pytest.fixture(scope="module")
def haar():
    return HaarDetector(CFG)


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    """A (72 px) walks right, B (56 px) walks left at the same height in front of it and hides
    most of its face for 7-8 frames: the hardest of the crossings TrackConfig's defaults were
    measured on (a velocity smoothing of 0.5 or a min_iou of 0.5 loses A's id here)."""
    scenes = []
    for k in range(N):
        t = k / (N - 1)
        scenes.append([(*A, round(30 + 360 * t), 120), (*B, round(390 - 360 * t), 120)])
    return clip(tmp_path_factory, "crossing", scenes)


@pytest.fixture(scope="module")
def away(tmp_path_factory):
    """A alone, drifting right; gone in frames 13-16 (4 frames) and 29-40 (12 frames)."""
    scenes = [[] if 13 <= i <= 16 or 29 <= i <= 40 else [(*A, 100 + 2 * i, 120)] for i in range(1, N + 1)]
    return clip(tmp_path_factory, "away", scenes)


@pytest.fixture(scope="module")
def alternating(tmp_path_factory):
    """A on the left and B on the right, still, their faces growing and shrinking in turn (44 to
    76 px): the larger face changes sides four times."""
    scenes = []
    for k in range(N):
        s = math.sin(2 * math.pi * k / 25)
        a, b = face_sprite(round(60 + 16 * s)), face_sprite(round(60 - 16 * s), mirror=True, tint=B_TINT)
        scenes.append([(*a, 80, 140 - round(8 * s)), (*b, 320, 140 + round(8 * s))])
    return clip(tmp_path_factory, "alternating", scenes)


def opener(decoded):
    return lambda: iter(decoded)


def which_face(track, truth):
    """The index of the true face a track follows (the one its boxes overlap most on average)."""
    ious = [[iou(track.box(i), truth[i - 1][f]) for f in range(len(truth[i - 1]))]
            for i in range(track.first, track.last + 1)]
    return int(np.argmax(np.mean(ious, axis=0)))


@pytest.fixture(scope="module")
def crossing_tracks(haar, crossing):
    """``{detect_every: Tracking}`` of the crossing clip, full detection on every frame and on every fifth."""
    decoded = crossing[2]
    return {k: tracking.track_faces(opener(decoded), haar, tracked(detect_every=k), "crossing") for k in (1, 5)}


@pytest.fixture(scope="module")
def crossing_tracks_default(crossing):
    """``crossing_tracks`` with the default detector (the defaults of TrackConfig hold with it too)."""
    detector, decoded = sources.detector(CFG), crossing[2]
    return {k: tracking.track_faces(opener(decoded), detector, tracked(detect_every=k), "crossing") for k in (1, 5)}


@pytest.mark.parametrize("detector", ["haar", "default"])
@pytest.mark.parametrize("detect_every", [1, 5])
def test_two_crossing_faces_give_two_tracks_without_an_identity_switch(crossing, crossing_tracks,
                                                                       crossing_tracks_default, detector, detect_every):
    truth = crossing[1]
    result = (crossing_tracks if detector == "haar" else crossing_tracks_default)[detect_every]
    assert result.num_frames == N and len(result.tracks) == 2, [(t.id, t.first, t.last) for t in result.tracks]
    assert {which_face(t, truth) for t in result.tracks} == {0, 1}
    for t in result.tracks:
        f = which_face(t, truth)
        assert (t.first, t.last) == (1, N)  # every frame of each face is in its track
        # Every box, found or carried through the occlusion, is on the track's own face.
        overlaps = [iou(t.box(i), truth[i - 1][f]) for i in range(1, N + 1)]
        assert min(overlaps) > 0.4, (t.id, np.round(overlaps, 2))
    hidden = next(t for t in result.tracks if which_face(t, truth) == 0)
    assert 0 < N - hidden.num_found <= 10  # A was hidden: carried, not found, for a few frames


def test_detecting_every_fifth_frame_gives_the_same_tracks_for_a_fifth_of_the_full_detections(crossing_tracks):
    every, fifth = crossing_tracks[1], crossing_tracks[5]
    assert every.full_detections == N and fifth.full_detections == math.ceil(N / 5)
    assert fifth.full_detection_share == pytest.approx(1 / 5)
    assert [(t.id, t.first, t.last) for t in fifth.tracks] == [(t.id, t.first, t.last) for t in every.tracks]
    for a, b in zip(every.tracks, fifth.tracks):
        both = a.found & b.found
        assert both.mean() > 0.8
        centres = lambda t: t.boxes[both, :2] + t.boxes[both, 2:] / 2  # noqa: E731
        assert np.abs(centres(a) - centres(b)).max() <= 4, (a.id, np.abs(centres(a) - centres(b)).max(0))
        assert np.abs(a.boxes[both, 2:] - b.boxes[both, 2:]).max() <= 8  # Haar's sides jump in 10 % steps


@pytest.mark.parametrize("detect_every", [1, 5])
def test_a_face_back_within_max_gap_keeps_its_id_and_one_away_longer_gets_a_new_one(haar, away, detect_every):
    _, truth, decoded = away
    tracks = tracking.track_faces(opener(decoded), haar, tracked(detect_every=detect_every, max_gap=8), "away").tracks
    assert [(t.id, t.first, t.last) for t in tracks] == [(1, 1, 28), (2, 41, N)]
    first = tracks[0]
    assert [i for i in range(1, 29) if not first.found_at(i)] == [13, 14, 15, 16]
    for i in (13, 16):  # carried through the short gap where the face would be
        assert iou(first.box(i), Box(100 + 2 * i, 120, 72, 72)) > 0.5, (i, first.box(i))
    # The default max_gap (1 s) bridges the 12-frame absence too.
    assert len(tracking.track_faces(opener(decoded), haar, tracked(detect_every=detect_every), "away").tracks) == 1


def test_a_window_search_finds_the_face_in_frame_pixels(haar, crossing):
    _, truth, decoded = crossing
    i = 10
    (d,) = tracking._window_detections(decoded[i - 1], [truth[i - 1][1]], haar, 2.0, CFG.detect_max_side)
    full = [x for x in haar.detect_all(decoded[i - 1]) if iou(x.box, truth[i - 1][1]) > 0.5][0]
    assert abs(d.box.x - full.box.x) <= 4 and abs(d.box.y - full.box.y) <= 4, (d.box, full.box)
    # A predicted box off the frame searches nothing.
    assert tracking._window_detections(decoded[0], [Box(W + 50, 10, 40, 40)], haar, 2.0, CFG.detect_max_side) == []


@pytest.mark.parametrize("max_side", [640, 320])
def test_a_window_of_a_large_frame_is_searched_at_the_scale_of_the_whole_frame(haar, max_side):
    # 1280×720 is searched at 640×360 (or 320×180): the window around a face 1/4 of the height
    # (180 px, 360 px wide) is shrunk by the same factor, and the box comes back in frame pixels.
    frame, face = portrait(1 / 4, 720, 1280, at=(0.3, 0.5))
    detector = HaarDetector(dataclasses.replace(CFG, detect_max_side=max_side))
    whole = detector.detect(frame)
    (d,) = tracking._window_detections(frame, [face], detector, 2.0, max_side)
    assert iou(whole, face) > 0.5 and iou(d.box, face) > 0.5, (whole, d.box, face)
    assert np.abs(np.subtract(d.box, whole)).max() <= 1280 / max_side * 4, (d.box, whole)


def colour_of(crop):
    """Blue over green in the crop's middle: about 1 for the astronaut, 1.6 for the tinted copy."""
    middle = crop[24:72, 24:72].astype(np.float64)
    return middle[..., 2].mean() / middle[..., 1].mean()


def test_the_converter_keeps_one_person_where_the_largest_face_changes_hands(haar, alternating, tmp_path):
    path, truth, decoded = alternating
    # The largest-face rule (full detection on every frame, the largest box) changes sides.
    sides = [d[0].box.x < W / 2 for d in map(haar.detect_all, decoded)]
    assert sum(a != b for a, b in zip(sides, sides[1:])) >= 3, sides
    # The converter's crops, through the file and the converter's own code, stay on one person.
    recording = sources.MediaRecording("r1", "train", video=path)
    n, _, frames = recording.open(convert.ConvertConfig(modalities=("face",)))
    frames = list(frames)
    assert n == len(frames) and all(f.face_tracks == 2 for f in frames)
    colours = np.array([colour_of(faces.decode_jpeg(f.face_jpeg)) for f in frames])
    reference = [colour_of(faces.crop_face(decoded[0], truth[0][k], CFG)) for k in range(2)]
    person = np.abs(colours[:, None] - np.array(reference)[None]).argmin(1)
    assert len(set(person.tolist())) == 1, person
    assert np.mean([f.face_found for f in frames]) > 0.9


def test_face_crops_follow_the_main_track_and_hold_its_first_and_last_boxes(haar, away):
    _, truth, decoded = away
    cfg = tracked(detect_every=1, max_gap=8)
    crops = faces.face_crops(opener(decoded), haar, cfg, "away")
    out = list(crops)
    main = crops.main
    assert (main.id, main.first, main.last) == (1, 1, 28) and len(crops.tracking.tracks) == 2
    assert [i for i, (_, found) in enumerate(out, start=1) if found] == \
        [i for i in range(1, 29) if not 13 <= i <= 16]
    for i, (crop, _) in enumerate(out, start=1):
        # After its last frame (28) the main track's last box is held, also where the other track is.
        np.testing.assert_array_equal(crop, faces.crop_face(decoded[i - 1], main.box(i), cfg), err_msg=str(i))
    assert main.box(N) == main.box(28)


def test_a_recording_without_a_face_is_an_error(haar):
    frames = [np.full((H, W, 3), 30, np.uint8)] * 3
    with pytest.raises(DataError, match=r"no face found in any of 3 frames of blank"):
        list(faces.face_crops(opener(frames), haar, CFG, "blank"))


def test_mediapipe_tracks_carry_its_scores_and_the_eyes_in_frame_pixels(away):
    import mediapipe  # noqa: F401 - `make test` installs the mediapipe extra: this must run

    _, truth, decoded = away
    detector = faces.MediaPipeDetector(CFG)
    try:
        # Full detection every 5th frame: most boxes come from the windows.
        tracks = tracking.track_faces(opener(decoded), detector, tracked(max_gap=8), "away").tracks
    finally:
        detector.close()
    assert [(t.id, t.first, t.last) for t in tracks] == [(1, 1, 28), (2, 41, N)]
    for t in tracks:
        found = t.found
        assert np.all((t.scores[found] >= 0.5) & (t.scores[found] <= 1)) and np.isnan(t.scores[~found]).all()
        assert np.isnan(t.eyes[~found]).all()
        for k in np.flatnonzero(found):
            (rx, ry), (lx, ly) = t.eyes[k]
            x, y, w, h = t.boxes[k]
            # The eyes, mapped back from the window like the box, in the box's upper half.
            assert x < rx < lx < x + w and y < min(ry, ly) and max(ry, ly) < y + h / 2, (t.first + k, t.eyes[k])
