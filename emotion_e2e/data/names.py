"""Names that come from data and become file names: partitions and recording ids.

A partition name is part of its shards' names (``{partition}-00000-of-00001.tfrecord``), a
recording id the name of its evaluation files (``predictions/{recording}.csv``). Both are
checked where they enter (a manifest row, the RECOLA folder, a ``Recording``, ``metadata.json``,
the records ``eval.py`` predicts) against a conservative set, and every file whose name is made
from data is joined to its folder by ``file_in``, which refuses a name that would leave it.
"""

from __future__ import annotations

import os
import re

from emotion_e2e.errors import DataError

# Characters: with a shard's suffix and a temporary file's, far below a file name's 255 bytes.
MAX_LENGTH = 128
RECORDING_ID_CHARACTERS = "letters, digits, '_', '-' and '.'"
# No '-' in a partition: the shard pattern {partition}-*.tfrecord would also match the
# shards of a partition named {partition}-anything.
PARTITION_CHARACTERS = "letters, digits, '_' and '.'"
_RECORDING_ID = re.compile(rf"(?!\.)[A-Za-z0-9_.-]{{1,{MAX_LENGTH}}}")
_PARTITION = re.compile(rf"(?!\.)[A-Za-z0-9_.]{{1,{MAX_LENGTH}}}")


def _check(value, where: str, kind: str, pattern: re.Pattern, characters: str, error: type[Exception]) -> str:
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    shown = (f"{value[:MAX_LENGTH]!r}... ({len(value)} characters)" if isinstance(value, str)
             and len(value) > MAX_LENGTH else repr(value))
    raise error(f"{where}: {kind} {shown} is not allowed: expected 1 to {MAX_LENGTH} of {characters}, "
                f"not starting with '.'")


def check_recording_id(value, where: str, error: type[Exception] = DataError) -> str:
    """``value`` when it is a valid recording id; else ``error`` naming ``where`` (the file,
    line and column it came from), what was received and what is allowed."""
    return _check(value, where, "recording id", _RECORDING_ID, RECORDING_ID_CHARACTERS, error)


def check_partition(value, where: str, error: type[Exception] = DataError, kind: str = "partition") -> str:
    """``value`` when it is a valid partition name; else ``error`` as ``check_recording_id``.
    Other names that become folders (RECOLA's label dimensions) follow the same rule as ``kind``."""
    return _check(value, where, kind, _PARTITION, PARTITION_CHARACTERS, error)


def file_in(folder: str, name: str) -> str:
    """``folder/name`` for a file whose ``name`` is made from data. DataError when ``name`` is not
    one plain file name (empty, ``.``, ``..``, or holding a path separator or NUL): only such a
    name keeps the path directly inside ``folder``, also for ``ram://`` and ``gs://`` folders,
    which a normalised path comparison would mangle."""
    separators = {"/", "\0", os.sep, os.altsep} - {None}
    if name in ("", ".", "..") or any(s in name for s in separators):
        raise DataError(f"{name!r} is not a file name inside {folder} (expected one name without a path "
                        f"separator, not '.' or '..'): refused, it would be written outside that folder")
    return os.path.join(folder, name)
