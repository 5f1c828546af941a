"""Real-face test images: scikit-image's bundled astronaut photo (no download).

``skimage.data.astronaut()`` reads ``astronaut.png`` shipped inside the
scikit-image wheel (pinned in the ``test`` extra), so the tests need no network.
"""

from __future__ import annotations

import cv2
import numpy as np

from emotion_e2e.data.faces import Box

# Hand-labelled face (eyebrows to chin, cheek to cheek) in the 512×512 astronaut image.
ASTRONAUT_FACE = Box(180, 75, 90, 90)
# A 300×300 window of the astronaut around her face, and the face inside it.
PATCH_ORIGIN = (60, 0)  # (x, y) of the window in the astronaut image
PATCH_SIZE = 300
PATCH_FACE = Box(ASTRONAUT_FACE.x - PATCH_ORIGIN[0], ASTRONAUT_FACE.y - PATCH_ORIGIN[1],
                 ASTRONAUT_FACE.w, ASTRONAUT_FACE.h)
# Grey level of the flat dark background behind ``portrait`` (a dim wall behind a well-lit speaker).
DARK_BACKGROUND = 30


def astronaut() -> np.ndarray:
    """The (512, 512, 3) uint8 RGB astronaut photo."""
    from skimage.data import astronaut as load  # the `test` extra pins scikit-image

    return load()


def face_patch() -> np.ndarray:
    """(300, 300, 3) uint8 window of the astronaut with her face at ``PATCH_FACE``."""
    x, y = PATCH_ORIGIN
    return np.ascontiguousarray(astronaut()[y:y + PATCH_SIZE, x:x + PATCH_SIZE])


def portrait(face_fraction: float, height: int = 480, width: int = 640,
             at: tuple[float, float] = (0.5, 0.4)) -> tuple[np.ndarray, Box]:
    """A ``(height, width, 3)`` uint8 frame with the astronaut's face ``face_fraction`` × ``height``
    tall on a flat ``DARK_BACKGROUND``, and her face's ``Box`` in it.

    ``face_patch`` is scaled so that ``PATCH_FACE`` has the wanted height and placed so that the
    face box lies inside the frame at ``at``: 0..1 of the room left in x and y (0 = left or top);
    the rest of the patch is clipped at the frame border.
    """
    scale = face_fraction * height / PATCH_FACE.h
    side = round(PATCH_SIZE * scale)
    patch = cv2.resize(face_patch(), (side, side), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    fw, fh = round(PATCH_FACE.w * scale), round(PATCH_FACE.h * scale)
    fx, fy = round(at[0] * (width - fw)), round(at[1] * (height - fh))
    x, y = fx - round(PATCH_FACE.x * scale), fy - round(PATCH_FACE.y * scale)  # the patch's top-left
    frame = np.full((height, width, 3), DARK_BACKGROUND, np.uint8)
    xa, ya, xb, yb = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    frame[ya:yb, xa:xb] = patch[ya - y:yb - y, xa - x:xb - x]
    return frame, Box(fx, fy, fw, fh)


def noise_frame(seed: int, height: int, width: int) -> np.ndarray:
    """A reproducible uniform-noise RGB frame (no face in it)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def paste(frame: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """``frame`` with ``image`` pasted at top-left ``(x, y)`` (a copy)."""
    out = frame.copy()
    out[y:y + image.shape[0], x:x + image.shape[1]] = image
    return out


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    iw = max(0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    ih = max(0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = iw * ih
    return inter / (a.w * a.h + b.w * b.h - inter)


def shift(box: Box, dx: int, dy: int, scale: float = 1.0) -> Box:
    """``box`` scaled by ``scale`` about the origin, then moved by ``(dx, dy)``."""
    return Box(round(box.x * scale) + dx, round(box.y * scale) + dy, round(box.w * scale), round(box.h * scale))


def phone_portraits(count: int, height: int = 160, width: int = 120) -> list[np.ndarray]:
    """``count`` upright ``(height, width, 3)`` frames, taller than wide as a phone films a face,
    with the astronaut's face (45 % of the height) moving to the right from frame to frame."""
    return [portrait(0.45, height, width, at=(0.2 + 0.6 * k / max(count - 1, 1), 0.4))[0] for k in range(count)]


# A face cut-out's margin around PATCH_FACE on each side, as a fraction of the face's side: the
# head and some hair, so that two cut-outs overlap face on face when one passes the other.
SPRITE_MARGIN = 0.45


def face_sprite(face_px: int, mirror: bool = False, tint=None) -> tuple[np.ndarray, Box]:
    """The astronaut's head cut from ``face_patch``, scaled so that her face is ``face_px`` wide,
    mirrored left-right and/or its R, G, B multiplied by ``tint`` so that two copies differ;
    and the face's box in it."""
    p = face_patch()
    m = round(SPRITE_MARGIN * PATCH_FACE.w)
    x0, y0 = PATCH_FACE.x - m, max(PATCH_FACE.y - m, 0)
    img = p[y0:PATCH_FACE.y + PATCH_FACE.h + m, x0:PATCH_FACE.x + PATCH_FACE.w + m]
    fx, fy = PATCH_FACE.x - x0, PATCH_FACE.y - y0
    if mirror:
        img, fx = img[:, ::-1], img.shape[1] - fx - PATCH_FACE.w
    if tint is not None:
        img = np.clip(img * np.asarray(tint, np.float64), 0, 255).astype(np.uint8)
    s = face_px / PATCH_FACE.w
    img = cv2.resize(np.ascontiguousarray(img), (round(img.shape[1] * s), round(img.shape[0] * s)),
                     interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    return img, Box(round(fx * s), round(fy * s), face_px, face_px)


def draw_faces(height: int, width: int, placed) -> tuple[np.ndarray, list[Box]]:
    """A ``(height, width, 3)`` frame on ``DARK_BACKGROUND`` with ``placed`` ``[(sprite, face box in
    it, face x, face y), ...]`` drawn back to front (clipped at the border), and each face's box."""
    frame = np.full((height, width, 3), DARK_BACKGROUND, np.uint8)
    boxes = []
    for img, face, x, y in placed:
        px, py = x - face.x, y - face.y
        xa, ya = max(px, 0), max(py, 0)
        xb, yb = min(px + img.shape[1], width), min(py + img.shape[0], height)
        if xa < xb and ya < yb:
            frame[ya:yb, xa:xb] = img[ya - py:yb - py, xa - px:xb - px]
        boxes.append(Box(x, y, face.w, face.h))
    return frame, boxes
