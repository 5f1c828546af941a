"""``summary.csv``: one row per input of a ``python -m emotion_e2e.predict`` run.

Columns: ``file`` (the input's path), ``duration_s`` (its frames · the frame step), ``frames``,
``face_coverage`` (the share of frames in which a face was found: the main track's, or with
faces="all" any track's; empty for an audio model), per label dimension ``<label>_mean``,
``_q25``, ``_median``, ``_q75`` (over the CSV's rows: with faces="all", every track's), with
``--quadrants`` ``share_<quadrant>`` for each of ``quadrants.QUADRANTS`` (the share of the rows in it),
``real_time_factor`` (seconds of media per wall second), ``trimmed_s`` (seconds cut from the
longer of the audio track and the picture; empty for a live source, read as it comes) and
``error`` (the one-line error of an input that failed, its other columns empty; empty when fine).

The table is rewritten whole (atomically) after each input, so a run stopped midway leaves the
rows of the inputs done so far.
"""

from __future__ import annotations

import os

import numpy as np

from emotion_e2e import quadrants
from emotion_e2e import run_dir as run_lib
from emotion_e2e.errors import DataError
from emotion_e2e.predict import FACE_FOUND, LABEL_FORMAT, QUADRANT, TIME
from emotion_e2e.predict_inputs import SUMMARY_NAME

SUMMARY = f"{SUMMARY_NAME}.csv"
QUARTILES = {"q25": 0.25, "median": 0.5, "q75": 0.75}


def columns(label_names, quadrant_shares: bool = False) -> list[str]:
    """The summary's columns for a model with ``label_names`` (with ``quadrant_shares``, the share
    of the frames in each quadrant, ``share_<quadrant>``)."""
    stats = [f"{label}_{stat}" for label in label_names for stat in ("mean", *QUARTILES)]
    shares = [f"share_{q}" for q in quadrants.QUADRANTS] if quadrant_shares else []
    return ["file", "duration_s", "frames", "face_coverage", *stats, *shares, "real_time_factor", "trimmed_s", "error"]


def face_coverage(table) -> float:
    """The share of ``table``'s frames in which a face was found (NaN without faces): with a track
    index (faces="all"), the frames where any track found one."""
    if FACE_FOUND not in table:
        return np.nan
    found = table[FACE_FOUND].to_numpy() == 1
    if TIME in table.index.names and table.index.nlevels > 1:
        return table.index.get_level_values(TIME)[found].nunique() / table.attrs["frames"]
    return float(found.mean())


def row(table, label_names, frame_step: float) -> dict:
    """The summary row of ``predict_file``'s ``table``."""
    a = table.attrs
    out = {"file": a["path"], "duration_s": a["frames"] * frame_step, "frames": a["frames"],
           "face_coverage": face_coverage(table)}
    for label in label_names:
        values = table[label].to_numpy(np.float64)
        out[f"{label}_mean"] = values.mean()
        out.update({f"{label}_{stat}": np.quantile(values, q) for stat, q in QUARTILES.items()})
    if QUADRANT in table:
        out.update({f"share_{q}": share for q, share in quadrants.shares(table[QUADRANT].to_numpy()).items()})
    out.update(real_time_factor=a["real_time_factor"], trimmed_s=a.get("trimmed_frames", np.nan) * frame_step,
               error="")
    return out


class Summary:
    """The run's table in ``output_dir/summary.csv``, rewritten atomically after each ``add``."""

    def __init__(self, output_dir: str, label_names, quadrant_shares: bool = False):
        self.path = os.path.join(output_dir, SUMMARY)
        self.columns = columns(label_names, quadrant_shares)
        self.rows = []

    def add(self, values: dict):
        self.rows.append(values)
        self.write()

    def add_error(self, path: str, error: Exception):
        self.add({"file": path, "error": str(error)})

    @property
    def failed(self) -> int:
        return sum(bool(r.get("error")) for r in self.rows)

    def write(self):
        import pandas as pd  # noqa: PLC0415

        table = pd.DataFrame(self.rows, columns=self.columns).astype({"frames": "Int64"})  # no 3e+06
        run_lib.write_file(self.path, table.to_csv(index=False, float_format=LABEL_FORMAT), error=DataError)
