"""Label tracks: AVEC ARFF gold standards and CSV annotations → the 40 ms frame grid.

Frame ``i = 1..N`` takes the label value at time ``frame_step·i`` (docs/design.md §2); a file
at another rate is linearly interpolated onto that grid and its row at t = 0,
which belongs to no frame, is dropped.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import shlex

import numpy as np
import pandas as pd

from emotion_e2e.config import TimeBase
from emotion_e2e.errors import DataError

# The AVEC 2016 gold-standard attributes, in order: (name, type).
ARFF_ATTRIBUTES = (("instance_name", "string"), ("frametime", "numeric"), ("goldstandard", "numeric"))
_ARFF_NUMERIC = ("numeric", "real", "integer")
TIME_COLUMN = "time"
MILLISECONDS_PER_SECOND = 1000


@dataclasses.dataclass(frozen=True)
class LabelTrack:
    """Labels on the frame grid: ``values[i - 1]`` belongs to frame ``i``.

    Attributes:
      names: dimension names, e.g. ``('arousal', 'valence')``.
      values: ``(num_frames, len(names))`` float32, all finite.
      steps_in_milliseconds: the file's time steps are all whole multiples of the frame step
        in milliseconds (40, 80, ...): times that may be milliseconds, not seconds, which a
        length error then mentions.
    """

    names: tuple[str, ...]
    values: np.ndarray
    steps_in_milliseconds: bool = False

    @property
    def num_frames(self) -> int:
        return self.values.shape[0]

    def trimmed(self, num_frames: int) -> "LabelTrack":
        return dataclasses.replace(self, values=self.values[:num_frames])


def read_arff(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(frame_times, gold_standard)`` of an AVEC gold-standard ARFF file, both ``(rows,)``.

    The header is parsed, not skipped: blank lines, ``%`` comments, quoted names
    and CRLF line ends are accepted; any attribute set other than AVEC's is an error.
    """
    times, values, _ = _read_arff(path)
    return times, values


def _read_arff(path):
    """``read_arff`` plus each data row's line number in the file ``(rows,)``, for error messages."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"cannot read label file {path}: {e}") from e
    attributes, data_lines, in_data = [], [], False
    for number, raw in enumerate(io.StringIO(text, newline=None), start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if in_data:
            data_lines.append((number, line))
            continue
        keyword = line.split(None, 1)[0].lower()
        if keyword == "@attribute":
            try:
                parts = shlex.split(line, posix=True)
            except ValueError as e:
                raise DataError(f"{path}, line {number}: malformed @attribute line {line!r}") from e
            if len(parts) < 3:
                raise DataError(f"{path}, line {number}: malformed @attribute line {line!r}")
            attributes.append((parts[1].lower(), " ".join(parts[2:]).lower()))
        elif keyword == "@data":
            in_data = True
        elif keyword != "@relation":
            raise DataError(f"{path}, line {number}: unexpected header line {line!r}")
    types_ok = len(attributes) == len(ARFF_ATTRIBUTES) and all(
        name == want_name and (kind == want_kind or (want_kind == "numeric" and kind in _ARFF_NUMERIC))
        for (name, kind), (want_name, want_kind) in zip(attributes, ARFF_ATTRIBUTES))
    if not types_ok:
        raise DataError(f"{path}: unexpected ARFF attributes; expected {list(ARFF_ATTRIBUTES)}, "
                        f"received {attributes}")
    if not in_data:
        raise DataError(f"{path}: no @data section")
    times, values = np.empty(len(data_lines)), np.empty(len(data_lines))
    for row, (number, line) in enumerate(data_lines):
        fields = next(csv.reader([line], quotechar="'", skipinitialspace=True))
        if len(fields) != len(ARFF_ATTRIBUTES):
            raise DataError(f"{path}, line {number}: expected {len(ARFF_ATTRIBUTES)} values, "
                            f"received {len(fields)}: {line!r}")
        try:
            times[row], values[row] = (float("nan") if v.strip() == "?" else float(v) for v in fields[1:])
        except ValueError as e:
            raise DataError(f"{path}, line {number}: non-numeric value in {line!r}") from e
    return times, values, np.array([number for number, _ in data_lines], np.int64)


def to_grid(times: np.ndarray, values: np.ndarray, time_base: TimeBase, source: str, *,
            names: tuple[str, ...], lines: np.ndarray | None = None) -> np.ndarray:
    """Interpolates ``values`` ``(rows, dims)`` at ``times`` ``(rows,)`` onto frames ``1..N``.

    ``N`` is the number of grid times ``frame_step·i`` not after the last row's
    time. Returns ``(N, dims)`` float32. Errors name ``source``, the row (its
    line in the file when ``lines`` ``(rows,)`` is given, else its 1-based data
    row) and, for a bad value, the column (``names``, one per dimension) and frame.
    """
    times = np.asarray(times, np.float64)
    values = np.asarray(values, np.float64).reshape(len(times), -1)

    def row(r):
        return f"line {lines[r]}" if lines is not None else f"data row {r + 1}"

    if len(times) < 2:
        raise DataError(f"{source}: labels need at least two rows; received {len(times)}")
    bad_times = np.flatnonzero(~np.isfinite(times))
    if len(bad_times):
        r = bad_times[0]
        raise DataError(f"{source}: label time {times[r]} at {row(r)} is not finite")
    backwards = np.flatnonzero(np.diff(times) <= 0)
    if len(backwards):
        r = backwards[0]
        raise DataError(f"{source}: label times must be strictly increasing; time {times[r + 1]:.3f} s at "
                        f"{row(r + 1)} is not after {times[r]:.3f} s at {row(r)}")
    bad_rows, bad_dims = np.nonzero(~np.isfinite(values))
    if len(bad_rows):
        r, d = bad_rows[0], bad_dims[0]
        frame = max(1, math.ceil(times[r] / time_base.frame_step - 1e-6))
        raise DataError(f"{source}: label value {values[r, d]} (column {names[d]}) at time {times[r]:.3f} s "
                        f"({row(r)}), frame {frame}; labels must be finite")
    num_frames = int(math.floor(times[-1] / time_base.frame_step + 1e-6))
    grid = time_base.frame_time(np.arange(1, num_frames + 1))
    if num_frames < 1 or grid[0] < times[0] - 1e-6:
        raise DataError(f"{source}: labels cover {times[0]:.3f}–{times[-1]:.3f} s, which does not "
                        f"contain the frame grid {time_base.frame_step}·i for i = 1..{num_frames}")
    out = np.stack([np.interp(grid, times, values[:, d]) for d in range(values.shape[1])], axis=1)
    return out.astype(np.float32)


def steps_in_milliseconds(times: np.ndarray, time_base: TimeBase) -> bool:
    """Whether every step between ``times`` ``(rows,)`` is a whole multiple (1, 2, ...) of the
    frame step in milliseconds: a label file at the frame rate or below whose times are milliseconds."""
    ms = time_base.frame_step * MILLISECONDS_PER_SECOND
    steps = np.diff(np.asarray(times, np.float64)) / ms
    return bool(len(steps)) and bool(np.all((np.round(steps) >= 1) & (np.abs(steps - np.round(steps)) < 1e-6)))


def _combine(tracks: dict[str, np.ndarray], source: str, in_milliseconds: bool) -> LabelTrack:
    """Dimensions of one recording, trimmed to the shortest when within one frame."""
    lengths = {name: len(v) for name, v in tracks.items()}
    if max(lengths.values()) - min(lengths.values()) > 1:
        raise DataError(f"{source}: label dimensions differ in length by more than one frame: {lengths}")
    n = min(lengths.values())
    return LabelTrack(tuple(tracks), np.stack([v[:n, 0] for v in tracks.values()], axis=1), in_milliseconds)


def arff_labels(paths: dict[str, str], time_base: TimeBase, recording_id: str) -> LabelTrack:
    """One AVEC gold-standard ARFF per dimension, e.g. ``{'arousal': ..., 'valence': ...}``."""
    tracks, in_milliseconds = {}, True
    for name, path in paths.items():
        times, values, lines = _read_arff(path)
        tracks[name] = to_grid(times, values, time_base, f"{path} (recording {recording_id}, {name})",
                               names=(name,), lines=lines)
        in_milliseconds = in_milliseconds and steps_in_milliseconds(times, time_base)
    return _combine(tracks, f"recording {recording_id}", in_milliseconds)


def _check_header(path: str, source: str) -> None:
    """DataError naming ``source`` and the column when two of the first row's column names are the
    same once stripped (pandas would silently rename the second one ``name.1``)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            header = [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read label file {source}: {e}") from e
    for k, name in enumerate(header):
        if name in header[:k]:
            raise DataError(f"{source}: column {name!r} appears twice in the header (columns {header.index(name) + 1} "
                            f"and {k + 1} of {header}); every column needs its own name")


def csv_labels(path: str, time_base: TimeBase, recording_id: str) -> LabelTrack:
    """A CSV with a ``time`` column in seconds and one column per dimension (any names, any rate)."""
    source = f"{path} (recording {recording_id})"
    _check_header(path, source)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read label file {source}: {e}") from e
    table.columns = [str(c).strip() for c in table.columns]
    names = [c for c in table.columns if c != TIME_COLUMN]
    if TIME_COLUMN not in table.columns or not names:
        raise DataError(f"{source}: expected a '{TIME_COLUMN}' column and at least one label column; "
                        f"received columns {list(table.columns)}")
    try:
        numeric = table.astype(np.float64)
    except ValueError as e:
        raise DataError(f"{source}: non-numeric label value: {e}") from e
    times = numeric[TIME_COLUMN].to_numpy()
    values = to_grid(times, numeric[names].to_numpy(), time_base, source, names=tuple(names))
    return LabelTrack(tuple(names), values, steps_in_milliseconds(times, time_base))
