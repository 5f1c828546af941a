"""Training: checks before any graph, the tf.data → Keras bridge, callbacks, warm start, resume.

A run's files are laid out by ``emotion_e2e.run_dir``. Everything that can be checked
against the data's ``metadata.json`` and the run directory is checked by ``check_config``
before a graph is built, so a bad configuration stops with one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from emotion_e2e import checkpointing, distribute, locking
from emotion_e2e import config as config_lib
from emotion_e2e import run_dir as run_lib
from emotion_e2e.config import TrainConfig
from emotion_e2e.data import metadata, reader, schema
from emotion_e2e.errors import ConfigError
from emotion_e2e.models.kernels import FusedAdam

MONITOR = "val_ccc_mean"


def check_config(cfg: TrainConfig, run_dir: str, meta: dict):
    """Everything that can be checked without building a graph, against the data's metadata
    ``meta`` (``metadata.read(cfg.data_dir)``) and the shards it lists. Raises ConfigError or
    DataError with one line saying what was received and what was expected."""
    inputs = cfg.inputs
    missing = [m for m in inputs.modalities if m not in meta["modalities"]]
    if missing:
        raise ConfigError(f"--modalities={','.join(inputs.modalities)} but {cfg.data_dir} holds "
                          f"{','.join(meta['modalities'])} only (metadata.json)")
    for part in (cfg.train_partition, cfg.eval_partition):
        if part not in meta["partitions"]:
            raise ConfigError(f"partition {part!r} is not in {cfg.data_dir}; it holds {sorted(meta['partitions'])}")
        names = metadata.label_names(meta, part)
        if not names:
            labelled = [p for p in meta["partitions"] if metadata.label_names(meta, p)]
            raise ConfigError(f"partition {part!r} of {cfg.data_dir} is unlabelled; labelled partitions: {labelled}")
        unknown = [n for n in inputs.label_names if n not in names]
        if unknown:
            raise ConfigError(f"--label_names={','.join(inputs.label_names)} but partition {part!r} of "
                              f"{cfg.data_dir} has labels {list(names)}")
    if inputs.samples_per_frame != meta["samples_per_frame"] or (
            "face" in inputs.modalities and inputs.face_size != meta["face"]["size"]):
        raise ConfigError(f"the records have {meta['samples_per_frame']} samples per frame and "
                          f"{meta['face']['size']}-pixel faces; received samples_per_frame="
                          f"{inputs.samples_per_frame}, face_size={inputs.face_size}")
    _check_windows(cfg, meta)
    _check_label_variance(cfg, meta)
    metadata.verify(cfg.data_dir, meta, (cfg.train_partition, cfg.eval_partition))
    for src in cfg.init_from:
        _check_init_from(cfg, src)
    run_lib.check_dir(run_dir, "run directory")  # a file, or under one
    saved = run_lib.config_path(run_dir)
    # A run may be extended with more epochs and resumed on other hardware; anything else makes it another run.
    if tf.io.gfile.exists(saved) and dataclasses.replace(run_lib.load_config(run_dir), **_resumable(cfg)) != cfg:
        raise ConfigError(f"{run_dir} holds a run with another configuration ({saved}); "
                          f"use another --run_dir to start a new run")


def _resumable(cfg: TrainConfig) -> dict:
    """The fields a run may change when it is resumed: its length and where it runs."""
    return {f: getattr(cfg, f) for f in ("epochs", "strategy", "tpu", "connect_timeout", "backup_every_steps")}


def _check_windows(cfg: TrainConfig, meta: dict):
    """At least one recording of the training partition must be long enough for one window."""
    recordings = metadata.recordings(meta, cfg.train_partition)
    longest = max((r["num_frames"] for r in recordings), default=0)
    if longest < cfg.reader.seq_len:
        raise ConfigError(f"--seq_len={cfg.reader.seq_len} but no recording of partition "
                          f"{cfg.train_partition!r} in {cfg.data_dir} is that long (the longest has "
                          f"{longest} frames): no training window can be cut")


def _check_label_variance(cfg: TrainConfig, meta: dict):
    """Labels constant over a whole partition make CCC undefined: the loss would sit at 1."""
    for part in (cfg.train_partition, cfg.eval_partition):
        stats = meta["partitions"][part].get("labels", {})
        flat = [n for n in cfg.inputs.label_names if n in stats and not stats[n]["std"] > 0]
        if flat:
            ids = [r["recording_id"] for r in metadata.recordings(meta, part)]
            shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
            raise ConfigError(f"the {', '.join(flat)} labels of partition {part!r} in {cfg.data_dir} are constant "
                              f"(standard deviation 0 over recordings {shown}): CCC is undefined and the loss "
                              f"could never move from 1")


def _check_init_from(cfg: TrainConfig, src: str):
    src_cfg = run_lib.load_config(src)
    if not tf.io.gfile.exists(run_lib.checkpoint_path(src)):
        raise ConfigError(f"--init_from={src}: no {run_lib.checkpoint_path(src)} (has that run finished an epoch?)")
    theirs_modalities = src_cfg.inputs.modalities
    if len(theirs_modalities) != 1 or theirs_modalities[0] not in cfg.inputs.modalities:
        raise ConfigError(f"--init_from={src} was trained on {'+'.join(theirs_modalities)}; expected "
                          f"a unimodal run of one of {list(cfg.inputs.modalities)}")
    modality = theirs_modalities[0]
    own, theirs = getattr(cfg.model, modality), getattr(src_cfg.model, modality)
    if _differ(own, theirs, ignore=("weights",)) or (
            modality == "audio" and cfg.inputs.samples_per_frame != src_cfg.inputs.samples_per_frame) or (
            modality == "face" and cfg.inputs.face_size != src_cfg.inputs.face_size):
        raise ConfigError(f"--init_from={src}: its {modality} network {theirs} differs from this run's {own}")


def _differ(a, b, ignore=()) -> bool:
    da, db = config_lib.to_dict(a), config_lib.to_dict(b)
    return {k: v for k, v in da.items() if k not in ignore} != {k: v for k, v in db.items() if k not in ignore}


def to_keras(ds: tf.data.Dataset, cfg: TrainConfig) -> tf.data.Dataset:
    """Reader dicts → ``(inputs, targets, sample_weights)``: the model's inputs keyed by
    modality, one target per label name, each ``(batch, time)``, weighted by the padding mask."""
    names, modalities = cfg.inputs.label_names, cfg.inputs.modalities

    def split(b):
        x = {m: b[m] for m in modalities}
        y = {n: b["labels"][..., d] for d, n in enumerate(names)}
        w = {n: b["mask"] for n in names}
        return x, y, w

    return ds.map(split, num_parallel_calls=tf.data.AUTOTUNE)


def eval_batches(meta: dict, cfg: TrainConfig) -> int:
    """Batches in one validation pass: each recording's frames in windows of ``eval_seq_len``
    (metadata verified against the shards by ``check_config``)."""
    seq_len = cfg.reader.eval_seq_len
    windows = sum(-(-r["num_frames"] // seq_len) for r in metadata.recordings(meta, cfg.eval_partition))
    return -(-windows // cfg.reader.batch_size)


def set_precision(name: str):
    keras.mixed_precision.set_global_policy(
        {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[name])


def compile_model(model: keras.Model, cfg: TrainConfig):
    from emotion_e2e import losses, metrics  # noqa: PLC0415

    names = cfg.inputs.label_names
    # Keras prefixes a metric's name with its output's ("arousal_ccc") only when the model has
    # several outputs; a one-output model's metrics carry the label in their own name, so the
    # logs (history.csv, TensorBoard, the progress bar) name the dimension whatever their number.
    own = (lambda n: f"{n}_") if len(names) == 1 else (lambda n: "")  # noqa: E731
    model.compile(
        optimizer=FusedAdam(cfg.optimizer.learning_rate, epsilon=cfg.optimizer.epsilon),
        loss={n: losses.CCCLoss() for n in names},
        loss_weights={n: 1.0 / len(names) for n in names},  # the mean over dimensions of 1 − CCC
        weighted_metrics={n: [metrics.ConcordanceCorrelation(name=f"{own(n)}ccc"),
                              metrics.PearsonCorrelation(name=f"{own(n)}pcc"),
                              metrics.RootMeanSquaredError(name=f"{own(n)}rmse")] for n in names},
        jit_compile=cfg.jit_compile)


class MeanCCC(keras.callbacks.Callback):
    """Adds ``val_ccc_mean`` (the AVEC mean over dimensions of ``val_{label}_ccc``, the names
    ``compile_model`` gives whatever the number of dimensions) and the learning rate to the logs."""

    def __init__(self, label_names):
        super().__init__()
        self.keys = [f"val_{n}_ccc" for n in label_names]

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        missing = [k for k in self.keys if k not in logs]
        if missing:  # fit always validates: a missing key means the metrics are named otherwise
            raise RuntimeError(f"cannot compute {MONITOR}: the epoch's logs have no {missing}; "
                           f"they have {sorted(logs)}")
        logs[MONITOR] = float(np.mean([logs[k] for k in self.keys]))


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss, naming the step, before any checkpoint is overwritten."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir, self.epoch = run_dir, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            raise FloatingPointError(
                f"loss is {float(loss)} at epoch {self.epoch + 1}, batch {batch + 1} (optimizer step {step}); "
                f"training stopped, the last good checkpoints in {os.path.dirname(run_lib.checkpoint_path(self.run_dir))} "
                f"are intact")


def warm_start(model: keras.Model, cfg: TrainConfig) -> dict:
    """Copies the feature networks of the ``init_from`` runs' best models; returns tensors copied per run."""
    from emotion_e2e.models import copy_feature_weights  # noqa: PLC0415

    copied = {}
    for src in cfg.init_from:
        src_model = run_lib.load_checkpoint(src)
        modality = run_lib.load_config(src).inputs.modalities[0]
        copied[src] = copy_feature_weights(src_model, model, modality)
    return copied


def epoch_seed(seed: int, epoch: int) -> int:
    """The input pipeline's seed for ``epoch``: each epoch's windows, order and augmentation are a
    function of the run's seed and the epoch alone, so a resumed run sees what an uninterrupted one would."""
    return (seed * 1_000_003 + epoch) % 2**63


def train_dataset(cfg: TrainConfig, strategy: tf.distribute.Strategy, first_epoch: int, skip_steps: int = 0,
                  log=print):
    """The distributed training input from ``first_epoch`` to ``cfg.epochs``, ``steps_per_epoch``
    batches an epoch, without the first ``skip_steps`` batches. Each worker's input pipeline
    reads its own shards (``InputContext``) and batches its replicas' part of the global batch."""
    train_files = schema.partition_pattern(cfg.data_dir, cfg.train_partition)

    def per_worker(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        shards = reader.pipeline_shards(reader.list_shards(train_files), ctx, train_files)
        if ctx.num_input_pipelines > 1:
            log(f"input pipeline {ctx.input_pipeline_id} of {ctx.num_input_pipelines} reads {len(shards)} shards: "
                f"{', '.join(os.path.basename(s) for s in shards)}")

        def epoch(e):
            return to_keras(reader.make_dataset(train_files, cfg.inputs, cfg.reader, training=True, repeat=True,
                                                seed=epoch_seed(cfg.seed, e), input_context=ctx),
                            cfg).take(cfg.steps_per_epoch)

        # One pipeline an epoch, each started when the previous one ends (concatenate is lazy).
        epochs = functools.reduce(tf.data.Dataset.concatenate, map(epoch, range(first_epoch, cfg.epochs)))
        return epochs.skip(skip_steps)

    return strategy.distribute_datasets_from_function(per_worker)


def eval_dataset(cfg: TrainConfig, meta: dict) -> tf.data.Dataset:
    """The validation input: every frame of the eval partition in windows of ``eval_seq_len``. Every
    worker of a cluster reads all of it (no auto-sharding): the streaming metrics sum over replicas, and
    equal shares of whole-partition sums leave every CCC unchanged."""
    eval_files = schema.partition_pattern(cfg.data_dir, cfg.eval_partition)
    ds = to_keras(reader.make_dataset(eval_files, cfg.inputs, cfg.reader.for_evaluation(), training=False), cfg)
    # A known length: Keras then shows validation progress and does not warn at its end.
    ds = ds.apply(tf.data.experimental.assert_cardinality(eval_batches(meta, cfg)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def train(cfg: TrainConfig, run_dir: str, verbose: int | None = None, meta: dict | None = None
          ) -> keras.callbacks.History:
    """Trains (or resumes) the run in ``run_dir``. ``meta`` is the data's metadata when the
    caller has read it already (it is read once per run).

    Only the chief writes ``run_dir``; every process resumes from its backup (docs/design.md §12).
    The chief holds the lock of ``run_dir`` (``emotion_e2e.locking``) for the whole run: another
    process training into it is refused with a ConfigError.
    Returns the Keras history of the epochs trained by this call (``history.model`` is the model)."""
    # First: a multi-worker strategy must configure TF before any TF operation runs (check_config runs some).
    strategy = distribute.make_strategy(cfg.strategy, cfg.tpu, cfg.connect_timeout)
    meta = meta if meta is not None else metadata.read(cfg.data_dir)
    check_config(cfg, run_dir, meta)
    distribute.check_batch(strategy, cfg.reader.batch_size)
    chief = distribute.is_chief(strategy)
    # One writer per run: a second train.py on this run directory stops here, before it touches
    # anything. The other workers of a cluster write nothing, so they take no lock.
    writer = locking.hold(run_dir, ConfigError, "run directory", "another --run_dir") if chief else (
        contextlib.nullcontext())
    with writer:
        return _train(cfg, run_dir, strategy, meta, chief, verbose)


def _train(cfg: TrainConfig, run_dir: str, strategy: tf.distribute.Strategy, meta: dict, chief: bool,
           verbose: int | None) -> keras.callbacks.History:
    """``train`` once the configuration is checked and, on the chief, the run directory is locked."""
    from emotion_e2e.models import build_model  # noqa: PLC0415

    who = distribute.task_name(strategy)

    def log(message):
        print(f"{who}: {message}" if who else message, flush=True)

    if chief:
        for d in (run_lib.checkpoint_dir(run_dir), run_lib.backup_dir(run_dir)):
            run_lib.makedirs(d)
            checkpointing.remove_partials(d)
        checkpointing.remove_partials(run_dir)
        run_lib.save_config(run_dir, cfg)
    keras.utils.set_random_seed(cfg.seed)
    set_precision(cfg.mixed_precision)
    backup = checkpointing.Backup(run_lib.backup_dir(run_dir), cfg.steps_per_epoch, cfg.backup_every_steps,
                                  write=chief)
    eval_ds = eval_dataset(cfg, meta)
    with strategy.scope():
        model = build_model(cfg.model, cfg.inputs)
        compile_model(model, cfg)
        distribute.build_for_fit(model, strategy, eval_ds.element_spec)
        epoch, step = backup.restore(model)
        if (epoch, step) == (0, 0) and cfg.init_from:
            for src, n in warm_start(model, cfg).items():
                log(f"warm start: {n} tensors from {run_lib.checkpoint_path(src)}")
    history = keras.callbacks.History()  # of the epochs this call trains
    history.set_model(model)
    history.on_train_begin()
    if epoch >= cfg.epochs:
        log(f"{run_dir}: all {cfg.epochs} epochs are done already; nothing to train")
        return history
    if step:
        log(f"resuming epoch {epoch + 1} at step {step + 1} of {cfg.steps_per_epoch} ({backup.state_path})")
    callbacks = [MeanCCC(cfg.inputs.label_names), StopOnNaN(run_dir)]
    if chief:
        callbacks += [
            checkpointing.SaveModel(run_lib.checkpoint_path(run_dir, "best"), monitor=MONITOR,
                                    best=run_lib.best_score(run_dir, MONITOR, before_epoch=epoch)),
            checkpointing.SaveModel(run_lib.checkpoint_path(run_dir, "last")),
            checkpointing.History(run_lib.history_path(run_dir), first_epoch=epoch, resumed_at_step=step),
            keras.callbacks.TensorBoard(run_lib.tensorboard_dir(run_dir), write_graph=False),
        ]
    # Last: an epoch is backed up as finished only once its checkpoints and history row are written.
    callbacks.append(backup)
    if verbose is None:  # a progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    # A run resumed mid-epoch first finishes that epoch, then trains whole ones.
    parts = [(epoch, epoch + 1, cfg.steps_per_epoch - step, step)] if step else []
    parts.append((epoch + bool(step), cfg.epochs, cfg.steps_per_epoch, 0))
    try:
        for first, end, steps, skip in parts:
            if first < end:
                part = model.fit(train_dataset(cfg, strategy, first, skip, log), validation_data=eval_ds,
                                 initial_epoch=first, epochs=end, steps_per_epoch=steps, callbacks=callbacks,
                                 verbose=verbose)
                history.epoch += part.epoch
                for k, v in part.history.items():
                    history.history.setdefault(k, []).extend(v)
    except tf.errors.OpError as e:
        error = reader.data_error(e)
        if error is None:
            raise
        raise error from None
    return history
