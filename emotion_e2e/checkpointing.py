"""What training writes, written so that a process killed at any instant leaves a resumable run
(docs/design.md §12): the best and last models, the step-level backup, and ``history.csv``.

Every file is written under a temporary name beside its final one and renamed over it
(``tf.io.gfile.rename``: atomic on local file systems, and an object store shows a whole
object or none), so a reader finds the previous version or the new one, never half a file.
A write that fails (a full disk) removes its temporary file and stops training with a
ConfigError naming the file and the reason; the previous checkpoints, backup and history stay
as they were.
All paths go through ``tf.io.gfile``: local, ``gs://``, ``ram://``, and the file systems
``tensorflow_io`` registers.

The backup is one weights file (the model's and the optimizer's variables, the step counter
among them) and ``state.json``, which names it and says where training stands: ``epoch`` (the
epochs finished, with their validation and history row) and ``step`` (the steps of the next
epoch already taken). Writing ``state.json`` is the commit point; the weights it replaced are
deleted after it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

import keras
import tensorflow as tf

from emotion_e2e.errors import ConfigError, DataError
from emotion_e2e.run_dir import PARTIAL, makedirs, read_history, write_atomically, write_file

gfile = tf.io.gfile
STATE = "state.json"


def save_model(model: keras.Model, path: str):
    """``model.save(path)``, atomically: a kill during the save leaves the previous file, a
    failed save (a full disk) is a ConfigError naming ``path`` that leaves it too."""
    write_atomically(path, model.save)


def remove_partials(directory: str):
    """Deletes what killed writers left behind in ``directory``."""
    if gfile.isdir(directory):
        for name in gfile.listdir(directory):
            if name.startswith(PARTIAL):
                gfile.remove(os.path.join(directory, name))


class SaveModel(keras.callbacks.Callback):
    """Saves the model to ``path`` at the end of every epoch, atomically; with ``monitor``, only
    when the epoch's value is finite and beats ``best`` (larger is better), the best so far."""

    def __init__(self, path: str, monitor: str | None = None, best: float | None = None):
        super().__init__()
        self.path, self.monitor, self.best = path, monitor, best

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is not None:
            value = (logs or {}).get(self.monitor)
            if value is None or not math.isfinite(value) or (self.best is not None and value <= self.best):
                return
            self.best = float(value)
        makedirs(os.path.dirname(self.path))
        save_model(self.model, self.path)


RESUMED_AT_STEP = "resumed_at_step"


class History(keras.callbacks.Callback):
    """``history.csv``: one row per finished epoch (``epoch``, ``resumed_at_step``, then the logs'
    keys sorted).

    The whole file is rewritten atomically at every epoch end, so a kill never leaves half a row;
    rows of epochs from ``first_epoch`` on are dropped, so an epoch that a killed run finished but
    did not back up is written once, when it is trained again.

    A run resumed ``resumed_at_step`` steps into ``first_epoch`` marks that epoch's row with the
    number: its training loss and metrics cover the steps after it only (the running metric state is
    not in the backup: under a multi-replica strategy each replica holds its own). Its validation
    metrics are over the whole eval partition, as always. Epochs trained whole have it empty."""

    def __init__(self, path: str, first_epoch: int = 0, resumed_at_step: int = 0):
        super().__init__()
        self.path, self.first_epoch, self.resumed_at_step = path, first_epoch, resumed_at_step
        # Read once: a resumed run may call fit twice (the rest of an epoch, then whole ones).
        self.rows = [r for r in read_history(path) if int(r["epoch"]) < first_epoch]

    def on_epoch_end(self, epoch, logs=None):
        row = {k: _plain(v) for k, v in sorted((logs or {}).items())}
        resumed = self.resumed_at_step if epoch == self.first_epoch and self.resumed_at_step else ""
        self.rows = [r for r in self.rows if int(r["epoch"]) != epoch] + [
            {"epoch": epoch, RESUMED_AT_STEP: resumed, **row}]
        first = ["epoch", RESUMED_AT_STEP]
        keys = first + sorted({k for r in self.rows for k in r} - set(first))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_file(self.path, out.getvalue())


def _plain(value):
    return float(keras.ops.convert_to_numpy(value)) if not isinstance(value, str) else value


class Backup(keras.callbacks.Callback):
    """The step-level backup in ``directory``: written every ``every_steps`` optimizer steps (0:
    never mid-epoch) and at every epoch end, restored by ``restore``.

    Steps are counted globally (``optimizer.iterations``), so a resumed run backs up at the same
    steps as an uninterrupted one. With ``write=False`` (a worker that is not the chief) it only
    restores: the chief's backup is everyone's."""

    def __init__(self, directory: str, steps_per_epoch: int, every_steps: int = 0, write: bool = True):
        super().__init__()
        self.directory, self.steps_per_epoch = directory, steps_per_epoch
        self.every_steps, self.write = every_steps, write
        self.step = 0  # the global step, counted from restore()

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE)

    def read_state(self) -> dict | None:
        if not gfile.exists(self.state_path):
            return None
        try:
            with gfile.GFile(self.state_path) as f:
                state = json.load(f)
            return {k: state[k] for k in ("epoch", "step", "global_step", "weights")}
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"{self.state_path} is not a readable backup state ({e}); delete {self.directory} "
                            f"to train again from the last epoch's checkpoint") from e

    def restore(self, model: keras.Model) -> tuple[int, int]:
        """Loads the backup into ``model`` (built and compiled): returns ``(epoch, step)``, where
        training stands; ``(0, 0)`` when there is no backup."""
        state = self.read_state()
        if state is None:
            return 0, 0
        weights = os.path.join(self.directory, state["weights"])
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(weights)
        except Exception as e:  # noqa: BLE001 - h5py, Keras and gfile raise their own types
            raise DataError(f"{weights}, the backup {self.state_path} names, is not readable: "
                            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
        iterations = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
        if iterations != state["global_step"]:
            raise DataError(f"{weights} holds optimizer step {iterations} but {self.state_path} says "
                            f"{state['global_step']}: the backup is inconsistent")
        self.step = state["global_step"]
        return state["epoch"], state["step"]

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every_steps and self.step % self.every_steps == 0 and self.step % self.steps_per_epoch:
            self._save(self.step // self.steps_per_epoch, self.step % self.steps_per_epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch + 1, 0)

    def _save(self, epoch: int, step: int):
        if not self.write:
            return
        makedirs(self.directory)
        name = f"step-{self.step:09d}.weights.h5"
        path = os.path.join(self.directory, name)
        existed = gfile.exists(path)
        write_atomically(path, self.model.save_weights)
        state = {"epoch": epoch, "step": step, "global_step": self.step, "weights": name}
        try:
            write_file(self.state_path, json.dumps(state))  # the commit point
        except ConfigError:
            if not existed:  # weights no state names: the backup is left as it was
                gfile.remove(path)
            raise
        for old in gfile.listdir(self.directory):
            if old.endswith(".weights.h5") and old != name:
                gfile.remove(os.path.join(self.directory, old))
