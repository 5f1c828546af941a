"""The run directory: one home for its layout, its saved configuration and its checkpoints.

Training writes it, evaluation, comparison and export read it::

    RUN_DIR/
      config.json              the resolved TrainConfig: everything needed to rebuild the model
      checkpoints/best.keras   the model of the best epoch by dev mean CCC
      checkpoints/last.keras   the model after the last finished epoch
      backup/                  Keras BackupAndRestore state: re-running the same command resumes here
      history.csv              one row per epoch
      tensorboard/             the same scalars for TensorBoard
      eval/PARTITION/          report.json, predictions/*.csv, plots/*.png (eval.py)
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import math
import os
import shutil
import sys
import threading
import traceback

import tensorflow as tf

from emotion_e2e import config as config_lib
from emotion_e2e.config import TrainConfig
from emotion_e2e.errors import ConfigError, DataError, io_reason

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
CHECKPOINT_FILES = {"best": "best.keras", "last": "last.keras"}
BACKUP = "backup"
HISTORY = "history.csv"
TENSORBOARD = "tensorboard"
EVAL = "eval"
REPORT = "report.json"
PARTIAL = ".partial-"  # the prefix of a file being written (write_file, checkpointing)


# URL schemes whose file systems tensorflow_io registers (TF itself has local paths, gs:// and ram://).
IO_SCHEMES = ("s3", "hdfs", "az", "http", "https")


def register_filesystems(*paths: str):
    """Imports ``tensorflow_io`` when a path names one of its file systems (``s3://``, ``hdfs://``,
    ``az://``...), which registers them with ``tf.io.gfile``."""
    if any(p and p.split("://", 1)[0] in IO_SCHEMES for p in paths if "://" in (p or "")):
        import tensorflow_io  # noqa: F401, PLC0415 - imported for its file system plugins


# Schemes served inside this process: no store to wait for.
IN_PROCESS_SCHEMES = ("file", "ram")


def is_remote(path: str | None) -> bool:
    """Whether ``path`` lives on a store reached over the network (``s3://``, ``gs://``, ``hdfs://``...)."""
    return bool(path) and "://" in path and path.split("://", 1)[0] not in IN_PROCESS_SCHEMES


def wait_for_storage(*paths: str | None, timeout: float):
    """Registers the file systems ``paths`` need (``register_filesystems``), then waits at most
    ``timeout`` seconds for the store of each remote one to answer a first look-up; a ConfigError
    naming the path (and ``S3_ENDPOINT`` for ``s3://``) when it does not, or fails. Local paths
    (and None) are not looked up.

    Without this an unreachable store costs minutes: ``tensorflow_io``'s S3 file system retries a
    closed port for about 100 s and waits 5 minutes per attempt on one that never answers, then
    reports every path as not found."""
    if not timeout > 0:
        raise ConfigError(f"the storage timeout must be a positive number of seconds. Received: {timeout}")
    register_filesystems(*paths)
    for path in filter(is_remote, paths):
        outcome = []
        # A daemon thread: a look-up that never returns must not keep the process alive.
        look_up = threading.Thread(target=_look_up, args=(path, outcome), name=f"look-up {path}", daemon=True)
        look_up.start()
        look_up.join(timeout)
        endpoint = os.environ.get("S3_ENDPOINT") if path.startswith("s3://") else None
        where = f" (S3_ENDPOINT={endpoint})" if endpoint else ""
        if not outcome:
            raise ConfigError(f"{path}: the store could not be reached within {timeout:g} s{where}; is it "
                              f"running and reachable from here? (--storage_timeout sets the wait)")
        if isinstance(outcome[0], tf.errors.OpError) and not isinstance(outcome[0], tf.errors.NotFoundError):
            message = outcome[0].message.splitlines()[0] if outcome[0].message else type(outcome[0]).__name__
            raise ConfigError(f"cannot access {path}{where}: {message}")


def _look_up(path: str, outcome: list):
    try:
        outcome.append(tf.io.gfile.exists(path))
    except tf.errors.OpError as e:
        outcome.append(e)


def config_path(run_dir: str) -> str:
    return os.path.join(run_dir, CONFIG)


def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINTS)


def checkpoint_path(run_dir: str, which: str = "best") -> str:
    """``checkpoints/best.keras`` or ``checkpoints/last.keras``."""
    if which not in CHECKPOINT_FILES:
        raise ValueError(f"which must be one of {tuple(CHECKPOINT_FILES)}. Received: which={which!r}")
    return os.path.join(run_dir, CHECKPOINTS, CHECKPOINT_FILES[which])


def backup_dir(run_dir: str) -> str:
    return os.path.join(run_dir, BACKUP)


def history_path(run_dir: str) -> str:
    return os.path.join(run_dir, HISTORY)


def tensorboard_dir(run_dir: str) -> str:
    return os.path.join(run_dir, TENSORBOARD)


def eval_dir(run_dir: str, partition: str) -> str:
    """Where ``eval.py`` writes the evaluation of ``partition``."""
    return os.path.join(run_dir, EVAL, partition)


def report_path(run_dir: str, partition: str) -> str:
    return os.path.join(eval_dir(run_dir, partition), REPORT)


def load_config(run_dir: str) -> TrainConfig:
    """The ``TrainConfig`` saved in ``run_dir``; ConfigError naming the file when it is missing,
    not JSON, or written by an incompatible version."""
    path = config_path(run_dir)
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"{run_dir} is not a run directory: {CONFIG} not found")
    try:
        with tf.io.gfile.GFile(path) as f:
            data = json.load(f)
        return config_lib.from_dict(TrainConfig, data)
    except (ValueError, TypeError) as e:  # JSONDecodeError is a ValueError; so are invalid values
        raise ConfigError(f"{path} is not a readable run configuration: {e}") from e


def save_config(run_dir: str, cfg: TrainConfig):
    """Writes ``config.json`` atomically (a reader never sees half a file)."""
    makedirs(run_dir, "run directory")
    write_json(config_path(run_dir), config_lib.to_dict(cfg))


def load_checkpoint(run_dir: str, which: str = "best", compile: bool = False):  # noqa: A002 - keras' name
    """The saved ``.keras`` model of the run; ConfigError when the run has none yet, DataError
    naming the file when it is truncated or corrupt."""
    from emotion_e2e.models import load_model  # noqa: PLC0415 - keeps TF out of config-only callers

    path = checkpoint_path(run_dir, which)
    if not tf.io.gfile.exists(path):
        raise ConfigError(f"{path} not found: has the run in {run_dir} finished an epoch?")
    try:
        return load_model(path, compile=compile)
    except Exception as e:  # noqa: BLE001 - zipfile, h5py and Keras all raise their own types
        raise DataError(f"{path} is not a readable .keras model (truncated or corrupt?): "
                        f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e


def best_score(run_dir: str, monitor: str, before_epoch: int | None = None) -> float | None:
    """The best (largest) finite ``monitor`` value in ``history.csv`` (of the epochs before
    ``before_epoch``), or None before the first epoch."""
    values = [float(r[monitor]) for r in read_history(history_path(run_dir))
              if r.get(monitor) and (before_epoch is None or int(r["epoch"]) < before_epoch)]
    values = [v for v in values if math.isfinite(v)]
    return max(values) if values else None


def partial_path(path: str) -> str:
    """A hidden temporary name beside ``path`` that keeps its suffix (Keras picks the format by it)."""
    head, tail = os.path.split(path)
    return os.path.join(head, f"{PARTIAL}{os.getpid()}-{tail}")


def write_atomically(path: str, write, error: type[ValueError] = ConfigError):
    """``write(tmp)`` to a temporary name beside ``path``, then renamed over it: readers see the
    old file or the new one.

    A write or rename that fails (a full disk: ``OSError``, h5py's ``OSError`` or TF's
    ``ResourceExhaustedError``) removes the temporary file and raises ``error`` naming ``path``
    and the reason; the previous ``path`` is kept as it was.
    """
    tmp = partial_path(path)
    try:
        write(tmp)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError) as e:
        reason = io_reason(e)
        _release(e)
        _remove_quietly(tmp)
        raise error(f"cannot write {path}: {reason}; the previous file is kept") from None
    except BaseException:
        _remove_quietly(tmp)
        raise


def _release(e: BaseException):
    """Closes what the failed writer left open: Keras does not close the h5py file of a weights
    save that fails, and h5py, closing it when it is collected, fails to flush it to the full disk
    again, which Python would print as an "Exception ignored" traceback after the one-line error.
    That second failure is the one reported: the writer's frames are cleared with it silenced."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda _: None
    try:
        traceback.clear_frames(e.__traceback__)
        e.__traceback__ = None
        gc.collect()
    finally:
        sys.unraisablehook = hook


def _remove_quietly(path: str):
    """Deletes ``path`` if it is there; a failure leaves it for ``checkpointing.remove_partials``."""
    with contextlib.suppress(OSError, tf.errors.OpError):
        if tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def write_file(path: str, data: str | bytes, error: type[ValueError] = ConfigError):
    """Writes ``data`` (text or bytes) to ``path`` atomically (``write_atomically``)."""
    def write(tmp):
        with tf.io.gfile.GFile(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)

    write_atomically(path, write, error)


def makedirs(path: str, what: str = "run directory folder"):
    """``tf.io.gfile.makedirs(path)``; ConfigError naming ``path`` and the reason when it fails
    (a file in the way, a full disk, no permission)."""
    try:
        tf.io.gfile.makedirs(path)
    except (OSError, tf.errors.OpError) as e:
        raise ConfigError(f"cannot create {what} {path}: {io_reason(e)}") from e


def check_dir(path: str, what: str, error: type[ValueError] = ConfigError):
    """``error`` when a file stands where the folder ``path`` is, or where it would be created
    (``path`` under a file): checked before any work, so nothing is computed for nothing."""
    found = path
    if "://" not in path:  # a local path: find its nearest existing ancestor
        found = os.path.abspath(path)
        while not os.path.exists(found) and os.path.dirname(found) != found:
            found = os.path.dirname(found)
    if not tf.io.gfile.exists(found) or tf.io.gfile.isdir(found):
        return
    if found == os.path.abspath(path) or found == path:
        raise error(f"{what} {path} is a file, not a directory")
    raise error(f"cannot create {what} {path}: {found} is a file, not a directory")


def read_history(path: str) -> list[dict]:
    """The rows of ``history.csv`` as dicts of strings; [] when there is none."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return list(csv.DictReader(f))


def strict_json(value):
    """``value`` with every non-finite float replaced by None, so it dumps as strict JSON
    (``NaN`` is not JSON; an undefined score is ``null``)."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, value):
    """Writes ``value`` as strict JSON to ``path`` atomically."""
    write_file(path, json.dumps(strict_json(value), indent=2, allow_nan=False))


@contextlib.contextmanager
def atomic_dir(target: str, partial: str):
    """Creates the folder ``partial`` for the ``with`` block to fill, then renames it to ``target``
    (atomic: a reader sees all of it or nothing; an empty ``target`` is replaced, one with files
    is refused with a ConfigError). ``partial`` is removed when anything fails; only a killed
    process leaves it behind. A write that fails (a full disk: ``OSError``, h5py's or TF's) is a
    ConfigError naming ``target`` and the reason."""
    try:
        os.mkdir(partial)
        yield partial
        try:
            os.rename(partial, target)
        except OSError as e:
            raise ConfigError(f"{target} appeared while it was being written (another process?): {e}") from e
    except (OSError, tf.errors.OpError) as e:
        reason = io_reason(e)
        _release(e)
        shutil.rmtree(partial, ignore_errors=True)
        raise ConfigError(f"cannot write {target}: {reason}; nothing was written there") from None
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
