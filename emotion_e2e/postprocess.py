"""AVEC 2016 post-processing of predictions, fitted on dev and applied unchanged to any partition.

docs/design.md §8: median filter, centring, scaling to the training labels' standard deviation
and time shift (Valstar et al., AVEC 2016; Tzirakis et al. 2017, Sec. V). A partition is a
dict ``{recording_id: (T, D) array}``, one column per label dimension, frames in order.

Steps, for each dimension ``d`` independently, in this order (``STEPS``):

1. **Median filter** of odd window ``w`` (1 = none), per recording; edges repeat the recording's
   first/last value (``scipy.ndimage.median_filter``, ``mode="nearest"``).
2. **Centring**: ``p ← p − mean(p) + train_mean``, where ``mean(p)`` is the mean of the
   predictions over the *whole partition being processed* (all recordings of the dict passed to
   ``apply``, after the steps before) and ``train_mean`` is the mean of the training gold standard.
3. **Scaling**: ``p ← mean(p) + (p − mean(p)) · train_std / std(p)``, population std of the
   predictions over the whole partition being processed (after the steps before); the spread
   becomes the training gold standard's, the mean is left as it is (so scaling does not undo or
   imitate centring).
4. **Time shift** by ``k`` frames, per recording: ``out[t] = p[clip(t − k, 0, T − 1)]``. ``k > 0``
   delays the predictions (moves them later), ``k < 0`` advances them (moves them earlier); the
   frames shifted in repeat the recording's first/last value. Annotators react late, so a model
   that is not itself delayed is usually best with ``k > 0``.

What is fitted on dev is the *choice* per dimension: the window (from ``window_sizes``), whether
centring and scaling are applied, and the shift (from ``-max_shift_frames..max_shift_frames``).
Each step is chosen greedily, in the order above, as the option that maximises the dev CCC of the
whole (concatenated) dev partition given the steps already chosen, and is kept only if it improves
that CCC strictly (ties keep "none": window 1, no centring, no scaling, shift 0). The statistics of
steps 2–3 are recomputed from the predictions of the partition being processed — predictions
only, never its labels — exactly as on dev; ``train_mean``/``train_std`` are constants.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from emotion_e2e.metrics import ccc_np

# Tzirakis et al. search windows of 0.04–20 s and shifts of 0.04–10 s; at 25 Hz, in frames.
DEFAULT_WINDOW_SIZES = (1, 3, 5, 7, 9, 15, 25, 51, 75, 101, 151, 251, 375, 501)
DEFAULT_MAX_SHIFT_FRAMES = 250


def _check_partition(pred: dict, num_dims: int | None, what: str) -> int:
    """Checks ``{id: (T, D)}``; returns D."""
    if not pred:
        raise ValueError(f"{what}: needs at least one recording. Received: an empty dict")
    for rec, p in pred.items():
        shape = np.shape(p)
        if len(shape) != 2 or shape[0] == 0:
            raise ValueError(f"{what}: recording {rec!r} must be a (T, D) array with T >= 1. Received: shape {shape}")
        if num_dims is None:
            num_dims = shape[1]
        elif shape[1] != num_dims:
            raise ValueError(f"{what}: recording {rec!r} has {shape[1]} dimensions, expected {num_dims}")
    return num_dims


def _median(x: np.ndarray, window: int) -> np.ndarray:
    return x if window == 1 else ndimage.median_filter(x, size=window, mode="nearest")


def _shift(x: np.ndarray, k: int) -> np.ndarray:
    if k == 0:
        return x
    return x[np.clip(np.arange(x.size) - k, 0, x.size - 1)]


def _centre(parts: list[np.ndarray], train_mean: float) -> list[np.ndarray]:
    mean = np.concatenate(parts).mean()
    return [p - mean + train_mean for p in parts]


def _scale(parts: list[np.ndarray], train_std: float) -> list[np.ndarray] | None:
    """``None`` if the predictions are constant (nothing to scale)."""
    allp = np.concatenate(parts)
    mean, std = allp.mean(), allp.std()
    if not std > 0:
        return None
    return [mean + (p - mean) * (train_std / std) for p in parts]


# The order of docs/design.md §8, and the PostProcessor field holding each step's choice.
STEPS = ("median", "centre", "scale", "shift")
STEP_FIELDS = {"median": "window_sizes", "centre": "centre", "scale": "scale", "shift": "shifts"}
STEP_NONE = {"median": 1, "centre": False, "scale": False, "shift": 0}  # the choice that changes nothing


def _step(parts: list[np.ndarray], step: str, choice, train_mean: float, train_std: float) -> list[np.ndarray]:
    """One step of ``STEPS`` with its ``choice`` (window, on/off, shift) on one dimension of a partition."""
    if step == "median":
        return [_median(p, choice) for p in parts]
    if step == "shift":
        return [_shift(p, choice) for p in parts]
    if not choice:
        return parts
    if step == "centre":
        return _centre(parts, train_mean)
    scaled = _scale(parts, train_std)
    return parts if scaled is None else scaled


class PostProcessor:
    """The AVEC 2016 post-processing chain (module docstring), one choice per label dimension.

    Build it with ``PostProcessor.fit(...)`` (on dev) or ``PostProcessor.from_dict(...)``. Fields, one
    entry per dimension:
      ``window_sizes``: median-filter window (1 = none);
      ``centre``, ``scale``: whether the step is applied;
      ``shifts``: time shift in frames (> 0 delays the predictions, < 0 advances them);
      ``train_label_mean``, ``train_label_std``: the training gold standard's statistics;
      ``dev_ccc``: for reports, the dev CCC before any step (``"raw"``) and after each step's choice
      (keyed by ``STEPS``); empty dicts if not known.
    """

    def __init__(self, window_sizes, shifts, centre, scale, train_label_mean, train_label_std, dev_ccc=None):
        fields = {"window_sizes": window_sizes, "shifts": shifts, "centre": centre, "scale": scale,
                  "train_label_mean": train_label_mean, "train_label_std": train_label_std}
        lengths = {k: len(v) for k, v in fields.items()}
        if len(set(lengths.values())) != 1 or not lengths["shifts"]:
            raise ValueError(f"PostProcessor: every field needs one value per dimension (>= 1). Received lengths: "
                             f"{lengths}")
        self.window_sizes = [int(w) for w in window_sizes]
        self.shifts = [int(k) for k in shifts]
        self.centre = [bool(c) for c in centre]
        self.scale = [bool(s) for s in scale]
        self.train_label_mean = [float(m) for m in train_label_mean]
        self.train_label_std = [float(s) for s in train_label_std]
        if any(w < 1 or w % 2 == 0 for w in self.window_sizes) or not all(s > 0 for s in self.train_label_std):
            raise ValueError(f"PostProcessor: windows must be odd and >= 1, train_label_std > 0. Received: "
                             f"window_sizes={self.window_sizes}, train_label_std={self.train_label_std}")
        self.dev_ccc = [dict(h) for h in dev_ccc] if dev_ccc is not None else [{} for _ in self.shifts]

    @property
    def num_dims(self) -> int:
        return len(self.shifts)

    @classmethod
    def fit(cls, pred_dev: dict, gold_dev: dict, train_label_std, *, train_label_mean,
            window_sizes=DEFAULT_WINDOW_SIZES, max_shift_frames: int = DEFAULT_MAX_SHIFT_FRAMES) -> "PostProcessor":
        """Chooses the steps on dev and returns a new fitted ``PostProcessor``.

        Args:
          pred_dev: ``{recording_id: (T, D)}`` dev predictions.
          gold_dev: ``{recording_id: (T, D)}`` dev gold standard, same ids and shapes.
          train_label_std: ``(D,)``, population std of the training gold standard per dimension.
          train_label_mean: ``(D,)``, mean of the training gold standard per dimension.
          window_sizes: odd positive median-filter windows to try (1 = no filtering).
          max_shift_frames: shifts tried are ``-max_shift_frames..max_shift_frames``.
        """
        num_dims = _check_partition(pred_dev, None, "PostProcessor.fit pred_dev")
        _check_partition(gold_dev, num_dims, "PostProcessor.fit gold_dev")
        if set(pred_dev) != set(gold_dev):
            raise ValueError(f"PostProcessor.fit: pred_dev and gold_dev must hold the same recordings. Received: "
                             f"only in pred_dev {sorted(set(pred_dev) - set(gold_dev))}, "
                             f"only in gold_dev {sorted(set(gold_dev) - set(pred_dev))}")
        for rec in pred_dev:
            if np.shape(pred_dev[rec]) != np.shape(gold_dev[rec]):
                raise ValueError(f"PostProcessor.fit: recording {rec!r} has predictions of shape "
                                 f"{np.shape(pred_dev[rec])} but gold of shape {np.shape(gold_dev[rec])}")
        mean = np.asarray(train_label_mean, dtype=np.float64).reshape(-1)
        std = np.asarray(train_label_std, dtype=np.float64).reshape(-1)
        if mean.size != num_dims or std.size != num_dims or not np.all(std > 0):
            raise ValueError(f"PostProcessor.fit: need train_label_mean and train_label_std of length {num_dims} "
                             f"with std > 0. Received: mean={mean.tolist()}, std={std.tolist()}")
        windows = [int(w) for w in window_sizes]
        if not windows or any(w < 1 or w % 2 == 0 for w in windows):
            raise ValueError(f"PostProcessor.fit: window_sizes must be odd and >= 1. Received: {tuple(window_sizes)}")
        if int(max_shift_frames) < 0:
            raise ValueError(f"PostProcessor.fit: max_shift_frames must be >= 0. Received: {max_shift_frames}")

        recs = sorted(pred_dev)
        chosen = {"window_sizes": [], "shifts": [], "centre": [], "scale": [], "dev_ccc": []}
        for d in range(num_dims):
            pred = [np.asarray(pred_dev[r], dtype=np.float64)[:, d] for r in recs]
            gold = np.concatenate([np.asarray(gold_dev[r], dtype=np.float64)[:, d] for r in recs])

            def score(parts):
                return ccc_np(np.concatenate(parts), gold)  # noqa: B023 - used inside this iteration only

            best = score(pred)
            history = {"raw": best}
            options = {"median": windows, "centre": (False, True), "scale": (False, True),
                       # smaller |k| first, so a tie keeps the smaller shift
                       "shift": sorted(range(-int(max_shift_frames), int(max_shift_frames) + 1), key=abs)}
            for step in STEPS:
                choice = STEP_NONE[step]
                for option in options[step]:
                    if option != STEP_NONE[step] and (candidate := score(_step(pred, step, option, mean[d], std[d]))) > best:
                        best, choice = candidate, option
                pred = _step(pred, step, choice, mean[d], std[d])
                history[step] = best
                chosen[STEP_FIELDS[step]].append(choice)
            chosen["dev_ccc"].append(history)
        return cls(train_label_mean=mean, train_label_std=std, **chosen)

    def apply(self, pred: dict) -> dict:
        """The fitted steps on one partition ``{recording_id: (T, D)}`` -> same ids and shapes, float64.

        Centring and scaling use the mean and std of the predictions over all recordings passed,
        so pass a whole partition, not one recording at a time.
        """
        _check_partition(pred, self.num_dims, "PostProcessor.apply")
        recs = list(pred)
        out = {r: np.array(pred[r], dtype=np.float64, copy=True) for r in recs}
        for d in range(self.num_dims):
            parts = [out[r][:, d] for r in recs]
            for step in STEPS:
                choice = getattr(self, STEP_FIELDS[step])[d]
                parts = _step(parts, step, choice, self.train_label_mean[d], self.train_label_std[d])
            for r, p in zip(recs, parts):
                out[r][:, d] = p
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable state; ``PostProcessor.from_dict`` rebuilds the same object."""
        return {"window_sizes": list(self.window_sizes), "shifts": list(self.shifts),
                "centre": list(self.centre), "scale": list(self.scale),
                "train_label_mean": list(self.train_label_mean), "train_label_std": list(self.train_label_std),
                "dev_ccc": [dict(h) for h in self.dev_ccc]}

    @classmethod
    def from_dict(cls, state: dict) -> "PostProcessor":
        keys = ("window_sizes", "shifts", "centre", "scale", "train_label_mean", "train_label_std")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"PostProcessor.from_dict: missing {missing}. Received keys: {sorted(state)}")
        return cls(**{k: state[k] for k in keys}, dev_ccc=state.get("dev_ccc"))
