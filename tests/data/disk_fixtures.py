"""Real write failures and what they must leave: a disk that fills up, the files of a folder
byte for byte, and the one line a CLI stops with."""

import os


class SmallDisk:
    """A small tmpfs at ``path`` (the ``small_disk`` fixture mounts it): ``fill(leave)`` leaves
    ``leave`` bytes free (one filler file takes the rest; it replaces that of an earlier call),
    so a later write larger than that fails with ENOSPC for real."""

    FILLER = "filler"

    def __init__(self, path):
        self.path = path

    def free(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int = 0):
        filler = os.path.join(self.path, self.FILLER)
        if os.path.exists(filler):
            os.remove(filler)
        with open(filler, "wb") as f:
            f.write(b"\0" * max(self.free() - leave, 0))


def snapshot(directory) -> dict:
    """Every file under ``directory``, hidden ones included: ``{relative path: bytes}``."""
    out = {}
    for root, _, names in os.walk(directory):
        for n in names:
            with open(os.path.join(root, n), "rb") as f:
                out[os.path.relpath(os.path.join(root, n), directory)] = f.read()
    return out


def one_line_error(r) -> str:
    """The ``error: ...`` line a CLI (a ``subprocess.run`` result) stopped with, asserting exit
    status 1 and no traceback."""
    assert r.returncode == 1, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in r.stderr, r.stderr[-3000:]
    return lines[-1]
