"""Face tracks (docs/design.md §3): a recording's face detections linked across frames, one id per person.

``track_faces`` decodes a recording once and links the detector's faces into ``Track``\\ s:
each live track predicts its box in the next frame (constant velocity of centre and size, the
velocity smoothed), and detections go to tracks by maximum IoU with those predictions (the
Hungarian assignment on 1 − IoU; pairs below ``TrackConfig.min_iou`` are never made).
Unmatched detections start new tracks; a track missed for more than ``max_gap`` frames ends
(its box carried by the prediction in between, flagged not found). The full-frame detector runs
every ``detect_every`` frames; on the frames between, each live track is looked for in a window
around its predicted box, so a new face is found at the next full detection.

``main_track`` picks the person the converter keeps, and ``track_crops`` cuts the crops of
chosen tracks from a second decoding. Only boxes are kept, never frames: memory is
O(frames × tracks) small numbers.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from emotion_e2e.config import FaceConfig, TrackConfig
from emotion_e2e.data.faces import (Box, Detection, FaceDetector, check_frame, close_frames, crop_face,
                                    largest_first, level_eyes)
from emotion_e2e.errors import DataError

# Two detections overlapping more than this are one face found twice (by the windows of two
# tracks whose faces are crossing): the larger is kept. Two real faces overlap this much only
# when one hides the other, and then the detector sees one.
DUPLICATE_IOU = 0.5


@dataclasses.dataclass(frozen=True)
class Track:
    """One person's face over the frames ``first..last`` (1-based, inclusive) of a recording.

    Per frame of its life (``last - first + 1`` rows): ``boxes`` ``(n, 4)`` int32 ``x, y, w, h``
    in full-frame pixels (the detection where found, the prediction carried through a gap),
    ``found`` ``(n,)`` bool, ``scores`` ``(n,)`` float32 (the detector's confidence; NaN where
    not found or for a detector that gives none), ``eyes`` ``(n, 2, 2)`` float32 (right eye,
    left eye; NaN where not found or for a detector without landmarks). ``found`` is True in its
    first and last frames.
    """

    id: int
    first: int
    boxes: np.ndarray
    found: np.ndarray
    scores: np.ndarray
    eyes: np.ndarray

    @property
    def last(self) -> int:
        return self.first + len(self.found) - 1

    @property
    def num_found(self) -> int:
        return int(self.found.sum())

    @property
    def mean_area(self) -> float:
        """Mean box area in pixels over the frames where the face was found."""
        b = self.boxes[self.found].astype(np.float64)
        return float((b[:, 2] * b[:, 3]).mean())

    def box(self, frame: int) -> Box:
        """The box of 1-based ``frame``; before the track's first frame its first box, after its
        last frame its last box."""
        k = min(max(frame, self.first), self.last) - self.first
        return Box(*(int(v) for v in self.boxes[k]))

    def eyes_at(self, frame: int) -> np.ndarray | None:
        """The ``(2, 2)`` eyes the crop of 1-based ``frame`` is turned by (``FaceConfig.align``
        "eyes"): those of the track's last detection at or before it, held like ``box`` (before
        the track's first frame its first detection's, after its last its last's); None for a
        detector without landmarks."""
        k = self._held_eyes[min(max(frame, self.first), self.last) - self.first]
        return self.eyes[k] if k >= 0 else None

    @functools.cached_property
    def _held_eyes(self) -> np.ndarray:
        """Per row, the row of the last detection with eyes at or before it (-1 before any): computed
        once, so a crop per frame does not search back through the track."""
        rows = np.arange(len(self.found))
        return np.maximum.accumulate(np.where(np.isfinite(self.eyes).all(axis=(1, 2)), rows, -1))

    def found_at(self, frame: int) -> bool:
        """Whether the face was detected in 1-based ``frame`` (False outside the track's life)."""
        return self.first <= frame <= self.last and bool(self.found[frame - self.first])


@dataclasses.dataclass(frozen=True)
class Tracking:
    """``track_faces``' result: the ``tracks`` in id order (ids 1, 2, ... by first frame), the
    recording's ``num_frames`` and ``full_detections``, the frames on which the full-frame
    detector ran."""

    tracks: list[Track]
    num_frames: int
    full_detections: int

    @property
    def full_detection_share(self) -> float:
        """Share of the frames on which the full-frame detector ran (about 1 / detect_every)."""
        return self.full_detections / max(self.num_frames, 1)


def iou(a, b) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes (any numbers)."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _centre_size(box) -> np.ndarray:
    x, y, w, h = box
    return np.array([x + w / 2, y + h / 2, w, h], np.float64)


def _box(state) -> Box:
    """The integer ``Box`` of a ``(cx, cy, w, h)`` state (sides at least 1 pixel)."""
    cx, cy, w, h = state
    w, h = max(w, 1.0), max(h, 1.0)
    return Box(round(cx - w / 2), round(cy - h / 2), round(w), round(h))


class _Live:
    """A track while it is being built: its rows so far (with ``history``), its motion model,
    and what an online reader needs of its latest frame: ``box``, ``found_now``, ``score_now``, ``held_eyes``
    (the last detection's eyes), ``num_found`` and ``found_area`` (the sum of its found boxes' areas)."""

    def __init__(self, track_id: int, frame: int, detection: Detection, history: bool = True):
        self.id, self.first, self.history = track_id, frame, history
        self.boxes, self.found, self.scores, self.eyes = [], [], [], []
        self.num_found, self.found_area, self.held_eyes = 0, 0.0, None
        self.state = _centre_size(detection.box)  # at the last frame where it was found
        self.velocity = None  # per frame, of (cx, cy, w, h); None until found twice
        self.last_found = frame
        self._append(detection)

    def predict(self, frame: int) -> Box:
        """The box expected in ``frame``: the centre moves at constant velocity from the last
        detection; the size changes at its velocity for one frame, then is held. A size
        extrapolated through a gap shrinks or swells away from the face: the detector's sides
        jump in 10 % steps, and a half-hidden face's box shrinks just before it is lost."""
        if self.velocity is None:
            return _box(self.state)
        gap = frame - self.last_found
        return _box(self.state + self.velocity * np.array([gap, gap, 1, 1]))

    def update(self, frame: int, detection: Detection, smoothing: float):
        """Found in ``frame`` (after every earlier frame has its row)."""
        state = _centre_size(detection.box)
        measured = (state - self.state) / (frame - self.last_found)
        self.velocity = measured if self.velocity is None else smoothing * measured + (1 - smoothing) * self.velocity
        self.state, self.last_found = state, frame
        self._append(detection)

    def carry(self, frame: int):
        """Not found in ``frame``: the prediction is its box."""
        self.box, self.found_now, self.score_now = self.predict(frame), False, np.nan
        if self.history:
            self.boxes.append(tuple(self.box))
            self.found.append(False)
            self.scores.append(np.nan)
            self.eyes.append(None)

    def _append(self, d: Detection):
        self.box, self.found_now, self.score_now = d.box, True, d.score
        self.num_found += 1
        self.found_area += float(d.box.w) * d.box.h
        self.held_eyes = d.eyes if d.eyes is not None else self.held_eyes
        if self.history:
            self.boxes.append(tuple(d.box))
            self.found.append(True)
            self.scores.append(d.score)
            self.eyes.append(d.eyes)

    def finish(self) -> Track:
        """The ``Track``, its carried rows after the last detection dropped."""
        n = self.last_found - self.first + 1
        eyes = np.full((n, 2, 2), np.nan, np.float32)
        for k, e in enumerate(self.eyes[:n]):
            if e is not None:
                eyes[k] = e
        return Track(self.id, self.first, np.array(self.boxes[:n], np.int32).reshape(n, 4),
                     np.array(self.found[:n], bool), np.array(self.scores[:n], np.float32), eyes)


def _distinct(detections: Sequence[Detection]) -> list[Detection]:
    """``detections`` without the ones overlapping a larger one by more than ``DUPLICATE_IOU``."""
    kept = []
    for d in largest_first(detections):
        if all(iou(d.box, k.box) <= DUPLICATE_IOU for k in kept):
            kept.append(d)
    return kept


def _window_detections(frame: np.ndarray, predicted: Sequence[Box], detector: FaceDetector,
                       search_scale: float, max_side: int) -> list[Detection]:
    """The faces the detector finds in the windows of side ``search_scale`` × each ``predicted``
    box, centred on it and clipped to ``frame``, in full-frame pixels.

    Each window is shrunk as the whole frame is for detection (its longer side to ``max_side``),
    so the face is searched at the scale of a full detection: the same boxes, and a large face's
    window at full resolution would cost more than the whole frame downscaled.
    """
    H, W = frame.shape[:2]
    shrink = min(1.0, max_side / max(H, W))
    out = []
    for b in predicted:
        cx, cy = b.x + b.w / 2, b.y + b.h / 2
        half_w, half_h = search_scale * b.w / 2, search_scale * b.h / 2
        x0, y0 = max(round(cx - half_w), 0), max(round(cy - half_h), 0)
        x1, y1 = min(round(cx + half_w), W), min(round(cy + half_h), H)
        if x1 - x0 < 1 or y1 - y0 < 1:  # predicted off the frame
            continue
        window = frame[y0:y1, x0:x1]
        sx = sy = 1.0
        if shrink < 1:
            size = (max(1, round((x1 - x0) * shrink)), max(1, round((y1 - y0) * shrink)))
            window = cv2.resize(window, size, interpolation=cv2.INTER_AREA)
            sx, sy = (x1 - x0) / size[0], (y1 - y0) / size[1]
        for d in detector.detect_all(np.ascontiguousarray(window)):
            b = d.box
            eyes = None if d.eyes is None else (d.eyes * (sx, sy) + (x0, y0)).astype(np.float32)
            out.append(Detection(Box(round(b.x * sx) + x0, round(b.y * sy) + y0, round(b.w * sx), round(b.h * sy)),
                                 d.score, eyes))
    return out


def associate(predicted: Sequence[Box], detections: Sequence[Detection], min_iou: float) -> list[tuple[int, int]]:
    """``(track index, detection index)`` pairs: the assignment of maximum total IoU between the
    ``predicted`` boxes and the ``detections``' boxes, without pairs overlapping less than ``min_iou``."""
    if not predicted or not detections:
        return []
    overlap = np.array([[iou(p, d.box) for d in detections] for p in predicted])
    rows, cols = linear_sum_assignment(1.0 - overlap)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if overlap[r, c] >= min_iou]


class Tracker:
    """Links per-frame detections into tracks: ``step`` once per frame, then ``finish``.

    ``step(frame, detections, may_start)``: the frame's detections (full-frame pixels); new
    tracks start from unmatched ones only when ``may_start`` (a full-frame detection).

    With ``history=False`` (a live stream, read as it comes) no track keeps its rows: ``finish``
    is not available, memory stays constant however long it runs, and ``live`` holds what each
    track is at the latest frame (``online_main``).
    """

    def __init__(self, cfg: TrackConfig, history: bool = True):
        self.cfg, self.history = cfg, history
        self.live: list[_Live] = []
        self.done: list[Track] = []
        self.ended = 0  # tracks that have ended
        self.frame = 0
        self._next_id = 1

    def predicted(self, frame: int) -> list[Box]:
        """The predicted boxes of the live tracks in ``frame``, in ``self.live`` order."""
        return [t.predict(frame) for t in self.live]

    def step(self, detections: Sequence[Detection], may_start: bool = True):
        self.frame += 1
        frame, detections = self.frame, _distinct(detections)
        pairs = associate(self.predicted(frame), detections, self.cfg.min_iou)
        matched = dict(pairs)
        still = []
        for k, t in enumerate(self.live):
            if k in matched:
                t.update(frame, detections[matched[k]], self.cfg.smoothing)
            elif frame - t.last_found > self.cfg.max_gap:
                self.ended += 1
                if self.history:
                    self.done.append(t.finish())
                continue
            else:
                t.carry(frame)
            still.append(t)
        self.live = still
        if may_start:
            taken = set(matched.values())
            for j, d in enumerate(detections):
                if j not in taken:
                    self.live.append(_Live(self._next_id, frame, d, self.history))
                    self._next_id += 1

    def finish(self) -> list[Track]:
        """Every track, in id order; the tracker is spent."""
        if not self.history:
            raise ValueError("a tracker without history keeps no tracks to finish")
        tracks = self.done + [t.finish() for t in self.live]
        self.live, self.done = [], []
        return sorted(tracks, key=lambda t: t.id)


def track_faces(open_frames: Callable[[], Iterator[np.ndarray]], detector: FaceDetector, cfg: FaceConfig,
                source: str) -> Tracking:
    """The face tracks of one recording, decoded once: ``open_frames()`` yields its RGB frames
    ``(H, W, 3)`` uint8; ``source`` names it in errors (DataError for a frame that is not RGB).

    With ``track = cfg.track``, frame ``i`` (1-based) is searched whole when
    ``(i - 1) % track.detect_every == 0``, else in the windows around the live tracks'
    predicted boxes (downscaled like the whole frame, by ``cfg.detect_max_side``). With
    ``cfg.align`` "eyes" and a detector whose ``level_on_turned_square`` is set (YuNet), each
    detection's eyes are levelled first (``faces.level_eyes``), so the tracks hold those.
    """
    tracker = Tracker(cfg.track)
    frames = iter(open_frames())
    full = 0
    try:
        for frame in frames:
            full += track_frame(tracker, frame, detector, cfg, source)
    finally:
        close_frames(frames)
    return Tracking(tracker.finish(), tracker.frame, full)


def track_frame(tracker: Tracker, frame: np.ndarray, detector: FaceDetector, cfg: FaceConfig, source: str) -> bool:
    """Steps ``tracker`` on its next ``frame`` as ``track_faces`` does (the whole frame or the
    windows, eyes levelled for ``align`` "eyes"); whether the whole frame was searched. DataError
    naming ``source`` and the frame for a frame that is not RGB."""
    i = tracker.frame + 1
    check_frame(frame, source, i)
    whole = (i - 1) % cfg.track.detect_every == 0
    if whole:
        detections = detector.detect_all(frame)
    else:
        detections = _window_detections(frame, tracker.predicted(i), detector, cfg.track.search_scale,
                                        cfg.detect_max_side)
    if cfg.align == "eyes" and detector.level_on_turned_square:  # the crops are turned by the eyes
        detections = [d if d.eyes is None else d._replace(eyes=level_eyes(frame, d.box, d.eyes, detector, cfg))
                      for d in detections]
    tracker.step(detections, may_start=whole)
    return whole


def online_main(tracker: Tracker):
    """The live track a stream read as it comes keeps at the tracker's latest frame: the rule of
    ``main_track`` over what has been seen so far (found in the most frames, then the larger
    mean box, then the lower id); None while no face is tracked. Unlike the converter's, the
    choice can change hands as the stream goes on."""
    return min(tracker.live, key=lambda t: (-t.num_found, -t.found_area / t.num_found, t.id), default=None)


def main_track(tracks: Sequence[Track]) -> Track | None:
    """The person the converter keeps (``TrackConfig.main_track`` "most_found"): the track found
    in the most frames, ties broken by the larger mean box area, then by the lower id; None
    without tracks."""
    return min(tracks, key=lambda t: (-t.num_found, -t.mean_area, t.id), default=None)


def track_crops(open_frames: Callable[[], Iterator[np.ndarray]], tracks: Sequence[Track], num_frames: int,
                cfg: FaceConfig, source: str, life_only: bool = False
                ) -> Iterator[tuple[tuple[np.ndarray | None, bool], ...]]:
    """Per frame of the recording, in order, ``(crop, found)`` for each of ``tracks``: the
    ``(cfg.size, cfg.size, 3)`` uint8 crop of the track's box (``Track.box``: its first box
    before its life, its last after it, the carried one in its gaps; turned by ``Track.eyes_at``
    with ``cfg.align`` "eyes") and whether the face was detected there. With ``life_only`` the
    crop is None outside the track's ``first..last`` (nothing is cut for a track not alive).

    ``open_frames()`` decodes the recording again (one frame alive at a time); DataError when
    it gives fewer than the ``num_frames`` that ``track_faces`` decoded.
    """
    frames = iter(open_frames())
    try:
        n = 0
        for n, frame in zip(range(1, num_frames + 1), frames):  # range first: never pulls a frame too many
            check_frame(frame, source, n)
            yield tuple((None if life_only and not t.first <= n <= t.last
                         else crop_face(frame, t.box(n), cfg, t.eyes_at(n) if cfg.align == "eyes" else None),
                         t.found_at(n)) for t in tracks)
    finally:
        close_frames(frames)
    if n < num_frames:
        raise DataError(f"re-opening {source} gave {n} frames, but the first pass decoded {num_frames}; "
                        f"the decoder is not deterministic")
