"""One writer per folder: an exclusive lock on a hidden file inside it, which the kernel releases
when its holder ends, however it ends (docs/design.md §4, §12).

``hold(folder, ...)`` takes an exclusive, non-blocking ``flock`` on ``folder/.lock`` and writes
who holds it (pid, host, start time, command line) into that file. A second writer is refused at
once with one line naming the folder and the holder. A holder that ends deletes the file; a killed
one leaves it, but its lock dies with it, so the next writer acquires the lock and overwrites the
stale text. Folders named by a URL (``gs://``, ``s3://``, ``ram://``...) cannot be locked: there,
one writer per folder is the user's to ensure; so it is on a file system that takes no ``flock``
(some NFS and FUSE mounts: ENOLCK, EOPNOTSUPP), where a warning on stderr says so.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import shlex
import socket
import sys

LOCK = ".lock"


def lock_path(folder: str) -> str:
    return os.path.join(folder, LOCK)


def holder_text() -> str:
    """Who this process is, as written into a lock file it holds: one line."""
    since = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    command = shlex.join([os.path.basename(sys.executable), *sys.argv]).replace("\n", " ")
    return f"pid {os.getpid()} on {socket.gethostname()} since {since}: {command}"


@contextlib.contextmanager
def hold(folder: str, error: type[Exception], what: str = "folder", instead: str = "another folder"):
    """Holds the lock of ``folder`` (created if absent) for the ``with`` block.

    Raises ``error`` with one line when another process holds it (``{what} {folder} is locked by
    another writer, pid ... on HOST since TIME: COMMAND (FOLDER/.lock); wait for it to end, or use
    {instead}``) or when the lock file cannot be created (``{what} {folder} is not writable: ...``).
    A ``folder`` with a URL scheme is not locked, nor one whose file system takes no lock (with a
    warning).
    """
    if "://" in folder:
        yield
        return
    fd = _acquire(folder, error, what, instead)
    try:
        yield
    finally:
        if fd is not None:
            _release(folder, fd)


def _acquire(folder: str, error, what: str, instead: str) -> int | None:
    """The locked file's descriptor; None where the file system takes no lock."""
    path = lock_path(folder)
    while True:
        try:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise error(f"{what} {folder} is not writable: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace").strip()
            os.close(fd)
            raise error(f"{what} {folder} is locked by another writer, {holder or 'a process just starting'} "
                        f"({path}); wait for it to end, or use {instead}") from None
        except OSError as e:  # the file system takes no flock
            os.close(fd)
            print(f"warning: {what} {folder} cannot be locked ({e.strerror or e}: its file system takes no "
                  f"locks): make sure no other process writes to it meanwhile", file=sys.stderr)
            return None
        # A holder ending deletes the file after this open and before this lock: this process
        # then holds the lock of a file no other one can open. Lock the path's current file.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, (holder_text() + "\n").encode(), 0)
    return fd


def _release(folder: str, fd: int):
    # Deleted while still locked, so that no process finds the file without its holder's lock.
    with contextlib.suppress(FileNotFoundError):
        os.remove(lock_path(folder))
    os.close(fd)
