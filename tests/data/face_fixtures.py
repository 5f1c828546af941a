"""Real-face test images: scikit-image's bundled astronaut photo (no download).

``skimage.data.astronaut()`` reads ``astronaut.png`` shipped inside the
scikit-image wheel (pinned in the ``test`` extra), so the tests need no network.
"""

from __future__ import annotations

import numpy as np

from emotion_e2e.data.faces import Box

# Hand-labelled face (eyebrows to chin, cheek to cheek) in the 512×512 astronaut image.
ASTRONAUT_FACE = Box(180, 75, 90, 90)
# A 300×300 window of the astronaut around her face, and the face inside it.
PATCH_ORIGIN = (60, 0)  # (x, y) of the window in the astronaut image
PATCH_SIZE = 300
PATCH_FACE = Box(ASTRONAUT_FACE.x - PATCH_ORIGIN[0], ASTRONAUT_FACE.y - PATCH_ORIGIN[1],
                 ASTRONAUT_FACE.w, ASTRONAUT_FACE.h)


def astronaut() -> np.ndarray:
    """The (512, 512, 3) uint8 RGB astronaut photo."""
    from skimage.data import astronaut as load  # the `test` extra pins scikit-image

    return load()


def face_patch() -> np.ndarray:
    """(300, 300, 3) uint8 window of the astronaut with her face at ``PATCH_FACE``."""
    x, y = PATCH_ORIGIN
    return np.ascontiguousarray(astronaut()[y:y + PATCH_SIZE, x:x + PATCH_SIZE])


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
