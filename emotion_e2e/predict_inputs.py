"""What ``python -m emotion_e2e.predict --input`` names: files, folders and globs, and where each
input's outputs go.

An ``--input`` is a live source (``live.is_live``: standard input, a URL, a named pipe, a device),
a file (used as given), a folder (walked recursively) or, when no such path exists and it holds
``*``, ``?`` or ``[``, a glob (Python's, ``**`` recursive). Files found in a
folder or by a glob are kept when they are media by their content: FFmpeg opens them and they
have the streams the model needs; the others are skipped and counted. Hidden files and folders
(a name starting with '.') are not looked at, as ``ls`` and ``glob`` do.

Outputs mirror the input tree: ``DIR/a/b.mp4`` writes ``OUTPUT_DIR/a/b.csv`` (relative to the
folder given, or to a glob's leading folders without wildcards); a file given by name writes
``OUTPUT_DIR/<stem>.csv`` (a live source ``stem``'s name).
"""

from __future__ import annotations

import dataclasses
import glob
import itertools
import os

from emotion_e2e import live
from emotion_e2e.config import STREAM_KIND
from emotion_e2e.data import media, names
from emotion_e2e.errors import ConfigError, DataError

# Where the run's table goes in the output folder: an input may not write an output of that name.
SUMMARY_NAME = "summary"
SHOWN_SKIPPED = 3  # skipped files named in the report line
STDIN_STEM = "stdin"  # the output name of standard input (--input=-)


@dataclasses.dataclass(frozen=True)
class Input:
    """One media file to predict.

    ``name``: its outputs' path under the output folder without the extension, '/'-separated
    (``a/b`` for ``DIR/a/b.mp4``; the stem for a file given by name). ``given``: the ``--input``
    it came from. ``kinds``: its streams' kinds when it was found in a folder or by a glob (it
    was opened to be found), None for a file given by name (checked as before)."""

    path: str
    name: str
    given: str
    kinds: tuple[str, ...] | None = None

    @property
    def searched(self) -> bool:
        return self.kinds is not None


def is_glob(arg: str) -> bool:
    """A glob: no such path exists and it holds a wildcard (a file named 'take[1].mp4' is a file)."""
    return glob.has_magic(arg) and not os.path.lexists(arg)


def stem(path: str) -> str:
    """The output name of an input given by name: its file name without the extension ("stdin" for
    ``-``; for a URL or a capture device the last part of its path)."""
    path = os.fspath(path)
    pair = live.split_pair(path)
    if pair is not None:  # VIDEO+AUDIO: named after the video source
        path = pair[0]
    if path == live.STDIN:
        return STDIN_STEM
    return os.path.splitext(os.path.basename(path.split("?")[0].rstrip("/") if "://" in path else path))[0]


def _glob_base(pattern: str) -> str:
    """The leading folders of ``pattern`` without wildcards: what its matches' names are relative to."""
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), pattern.split(os.sep)[:-1]))
    return os.sep.join(fixed) or (os.sep if pattern.startswith(os.sep) else os.curdir)


def _walk(folder: str):
    """The regular and linked files under ``folder``, hidden files and folders left out, sorted."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        yield from (os.path.join(root, f) for f in sorted(files) if not f.startswith("."))


def _recording(path: str) -> tuple[str, ...] | None:
    """``path``'s stream kinds when FFmpeg opens it as a recording, else None (not media, a text
    file or a photo, a pipe or a socket)."""
    try:
        fmt, kinds = media.probe(path)
    except DataError:
        return None
    return kinds if media.is_recording(fmt) else None


def find(args) -> tuple[list[Input], dict[str, list[str]]]:
    """``(inputs, skipped)`` of the ``--input`` values ``args``, in their order (a folder's and a
    glob's files sorted): ``skipped`` holds per folder or glob the files found that are not media.
    ConfigError when ``args`` is empty, or a folder or glob holds no file at all."""
    args = [os.fspath(a) for a in args or ()]
    if not args:
        raise ConfigError("no input files given")
    inputs, skipped = [], {}
    for arg in args:
        if live.is_live(arg):  # before the glob: a URL's '?' is not a wildcard
            inputs.append(Input(arg, stem(arg), arg))
            continue
        if os.path.isdir(arg):
            found, base = list(_walk(arg)), arg
        elif is_glob(arg):
            found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            base = _glob_base(arg)
        else:
            inputs.append(Input(arg, stem(arg), arg))
            continue
        if not found:
            raise ConfigError(f"--input {arg}: no file {'in that folder' if os.path.isdir(arg) else 'matches it'} "
                              f"(hidden files and folders are not looked at)")
        skipped[arg] = []
        for path in found:
            kinds = _recording(path)
            if kinds is None:
                skipped[arg].append(path)
                continue
            rel = os.path.relpath(path, base)
            inputs.append(Input(path, os.path.splitext(rel)[0].replace(os.sep, "/"), arg, kinds))
    return inputs, skipped


def select(inputs: list[Input], skipped: dict[str, list[str]], modalities) -> list[Input]:
    """``inputs`` without the files found in folders or by globs that lack a stream the model's
    ``modalities`` need (added to ``skipped``). DataError naming a folder or glob that gives no
    media file the model can read."""
    kinds = {STREAM_KIND[m] for m in modalities}
    kept = []
    for i in inputs:
        if i.searched and not kinds <= set(i.kinds):
            skipped[i.given].append(i.path)
        else:
            kept.append(i)
    for arg, paths in skipped.items():
        if not any(i.given == arg for i in kept):
            raise DataError(f"--input {arg}: none of its {len(paths)} files is a media file with the "
                            f"{' and '.join(sorted(kinds))} the model needs (modalities {list(modalities)})")
    return kept


def skipped_note(arg: str, kept: int, paths: list[str]) -> str:
    """The report line of a folder or glob: how many media files it gave, how many it skipped."""
    shown = ", ".join(os.path.basename(p) for p in paths[:SHOWN_SKIPPED]) + ", ..." * (len(paths) > SHOWN_SKIPPED)
    return (f"{arg}: {kept} media file{'s' * (kept != 1)}"
            + (f"; skipped {len(paths)} other file{'s' * (len(paths) != 1)} (not media with the streams the "
               f"model needs: {shown})" if paths else ""))


def output_path(output_dir: str, name: str, ext: str) -> str:
    """``output_dir/name.ext``, each folder of ``name`` joined by ``names.file_in`` (none leaves
    ``output_dir``)."""
    *folders, last = name.split("/")
    for folder in folders:
        output_dir = names.file_in(output_dir, folder)
    return names.file_in(output_dir, f"{last}.{ext}")


def check_names(inputs: list[Input]) -> None:
    """ConfigError when two inputs would write the same ``<name>.csv``, an output name or one of its
    folders would be hidden (empty or starting with '.', which includes '.' and '..'), or an input
    would write ``summary.csv``, the run's table."""
    seen = {}
    for i in inputs:
        if any(not part or part.startswith(".") for part in i.name.split("/")):
            raise ConfigError(f"input {i.path} would write {i.name}.csv, a hidden file (expected a file name that "
                              f"does not start with '.'): rename the file or link it under another name")
        if i.name == SUMMARY_NAME:
            raise ConfigError(f"input {i.path} would write {SUMMARY_NAME}.csv, where the run's summary goes: "
                              f"rename the file or link it under another name")
        if i.name in seen:
            raise ConfigError(f"inputs {seen[i.name]} and {i.path} would both write {i.name}.csv: give files with "
                              f"different names, or predict them into different output directories")
        seen[i.name] = i.path
