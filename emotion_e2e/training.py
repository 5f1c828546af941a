"""Training: a run directory, the tf.data → Keras bridge, callbacks, warm start, resume.

A run directory holds::

    config.json            the resolved TrainConfig (eval.py rebuilds the model from it)
    checkpoints/best.keras the best model by dev mean CCC
    checkpoints/last.keras the model after the last epoch
    backup/                Keras BackupAndRestore state: re-running the same command resumes here
    history.csv            one row per epoch (loss, CCC/PCC/RMSE per dimension, learning rate)
    tensorboard/           the same scalars for TensorBoard
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from emotion_e2e import config as config_lib
from emotion_e2e.config import TrainConfig
from emotion_e2e.data import metadata, reader, schema
from emotion_e2e.errors import DataError
from emotion_e2e.models.model import INPUT_NAMES  # modality → model input and reader key

RUN_CONFIG = "config.json"
BEST, LAST = "best.keras", "last.keras"
MONITOR = "val_ccc_mean"


class ConfigError(ValueError):
    """Flags or run directories that contradict each other; raised before any graph is built."""


def checkpoint_path(run_dir: str, which: str = "best") -> str:
    return os.path.join(run_dir, "checkpoints", BEST if which == "best" else LAST)


def load_run_config(run_dir: str) -> TrainConfig:
    path = os.path.join(run_dir, RUN_CONFIG)
    if not os.path.exists(path):
        raise ConfigError(f"{run_dir} is not a run directory: {RUN_CONFIG} not found")
    with open(path) as f:
        return config_lib.from_dict(TrainConfig, json.load(f))


def check_config(cfg: TrainConfig, run_dir: str) -> dict:
    """Everything that can be checked without building a graph; returns the data's metadata."""
    try:
        meta = metadata.read(cfg.data_dir)
    except DataError as e:
        raise ConfigError(str(e)) from e
    missing = [m for m in cfg.model.modalities if m not in meta["modalities"]]
    if missing:
        raise ConfigError(f"--modalities={','.join(cfg.model.modalities)} but {cfg.data_dir} holds "
                          f"{','.join(meta['modalities'])} only (metadata.json)")
    unknown = [n for n in cfg.model.label_names if n not in meta["label_names"]]
    if unknown:
        raise ConfigError(f"--label_names={','.join(cfg.model.label_names)} but {cfg.data_dir} has labels "
                          f"{meta['label_names']}")
    for part in (cfg.train_partition, cfg.eval_partition):
        info = meta["partitions"].get(part)
        if info is None or not info.get("labelled"):
            raise ConfigError(f"partition {part!r} of {cfg.data_dir} is {'missing' if info is None else 'unlabelled'}; "
                              f"labelled partitions: {[p for p, i in meta['partitions'].items() if i.get('labelled')]}")
    if cfg.reader.samples_per_frame != meta["samples_per_frame"] or (
            "video" in cfg.model.modalities and cfg.reader.face_size != meta["face"]["size"]):
        raise ConfigError(f"the records have {meta['samples_per_frame']} samples per frame and "
                          f"{meta['face']['size']}-pixel faces; received samples_per_frame="
                          f"{cfg.reader.samples_per_frame}, face_size={cfg.reader.face_size}")
    for src in cfg.init_from:
        src_cfg = load_run_config(src)
        if not os.path.exists(checkpoint_path(src)):
            raise ConfigError(f"--init_from={src}: no {checkpoint_path(src)} (has that run finished an epoch?)")
        if len(src_cfg.model.modalities) != 1 or src_cfg.model.modalities[0] not in cfg.model.modalities:
            raise ConfigError(f"--init_from={src} was trained on {'+'.join(src_cfg.model.modalities)}; expected "
                              f"a unimodal run of one of {list(cfg.model.modalities)}")
        own = getattr(cfg.model, "audio" if src_cfg.model.modalities[0] == "audio" else "visual")
        theirs = getattr(src_cfg.model, "audio" if src_cfg.model.modalities[0] == "audio" else "visual")
        if dataclasses_differ(own, theirs, ignore=("weights",)):
            raise ConfigError(f"--init_from={src}: its {src_cfg.model.modalities[0]} network {theirs} differs "
                              f"from this run's {own}")
    saved = os.path.join(run_dir, RUN_CONFIG)
    # A run may be extended with more epochs; anything else makes it another run.
    if os.path.exists(saved) and dataclasses.replace(load_run_config(run_dir), epochs=cfg.epochs) != cfg:
        raise ConfigError(f"{run_dir} holds a run with another configuration ({saved}); "
                          f"use another --run_dir to start a new run")
    return meta


def dataclasses_differ(a, b, ignore=()) -> bool:
    da, db = config_lib.to_dict(a), config_lib.to_dict(b)
    return {k: v for k, v in da.items() if k not in ignore} != {k: v for k, v in db.items() if k not in ignore}


def to_keras(ds: tf.data.Dataset, cfg: TrainConfig) -> tf.data.Dataset:
    """Reader dicts → ``(inputs, targets, sample_weights)`` with one target per label name,
    each ``(batch, time)``, weighted by the padding mask."""
    names, modalities = cfg.model.label_names, cfg.model.modalities

    def split(b):
        x = {INPUT_NAMES[m]: b[INPUT_NAMES[m]] for m in modalities}
        y = {n: b["labels"][..., d] for d, n in enumerate(names)}
        w = {n: b["mask"] for n in names}
        return x, y, w

    return ds.map(split, num_parallel_calls=tf.data.AUTOTUNE)


def eval_batches(meta: dict, cfg: TrainConfig) -> int:
    """Batches in one evaluation pass: each recording's frames in windows of ``seq_len``."""
    windows = sum(-(-r["num_frames"] // cfg.reader.seq_len) for r in meta["recordings"]
                  if r["partition"] == cfg.eval_partition)
    return -(-windows // cfg.reader.batch_size)


def make_strategy(name: str) -> tf.distribute.Strategy:
    return tf.distribute.MirroredStrategy() if name == "mirrored" else tf.distribute.get_strategy()


def set_precision(name: str):
    keras.mixed_precision.set_global_policy(
        {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}[name])


def compile_model(model: keras.Model, cfg: TrainConfig):
    from emotion_e2e import losses, metrics  # noqa: PLC0415

    names = cfg.model.label_names
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.optimizer.learning_rate, epsilon=cfg.optimizer.epsilon),
        loss={n: losses.CCCLoss() for n in names},
        loss_weights={n: 1.0 / len(names) for n in names},  # the mean over dimensions of 1 − CCC
        weighted_metrics={n: [metrics.ConcordanceCorrelation(name="ccc"), metrics.PearsonCorrelation(name="pcc"),
                              metrics.RootMeanSquaredError(name="rmse")] for n in names},
        jit_compile=cfg.jit_compile)


class MeanCCC(keras.callbacks.Callback):
    """Adds ``val_ccc_mean`` (the AVEC mean over dimensions) and the learning rate to the logs."""

    def __init__(self, label_names):
        super().__init__()
        self.label_names = label_names

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        keys = [f"val_{n}_ccc" for n in self.label_names]
        if all(k in logs for k in keys):
            logs[MONITOR] = float(np.mean([logs[k] for k in keys]))


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
                f"training stopped, the last good checkpoints in {os.path.join(self.run_dir, 'checkpoints')} "
                f"are intact")


def _best_so_far(run_dir):
    path = os.path.join(run_dir, "history.csv")
    if not os.path.exists(path):
        return None
    import pandas as pd  # noqa: PLC0415

    history = pd.read_csv(path)
    return float(history[MONITOR].max()) if MONITOR in history and len(history) else None


def warm_start(model: keras.Model, cfg: TrainConfig) -> dict:
    """Copies the feature networks of the ``init_from`` runs' best models; returns tensors copied per run."""
    from emotion_e2e.models import copy_feature_weights, load_model  # noqa: PLC0415

    copied = {}
    for src in cfg.init_from:
        src_model = load_model(checkpoint_path(src))
        modality = load_run_config(src).model.modalities[0]
        copied[src] = copy_feature_weights(src_model, model, modality)
    return copied


def train(cfg: TrainConfig, run_dir: str, verbose: int | None = None) -> keras.callbacks.History:
    """Trains (or resumes) the run in ``run_dir``."""
    from emotion_e2e.models import build_model  # noqa: PLC0415

    meta = check_config(cfg, run_dir)
    os.makedirs(os.path.join(run_dir, "checkpoints"), exist_ok=True)
    with open(os.path.join(run_dir, RUN_CONFIG), "w") as f:
        json.dump(config_lib.to_dict(cfg), f, indent=2)
    keras.utils.set_random_seed(cfg.seed)
    set_precision(cfg.mixed_precision)
    strategy = make_strategy(cfg.strategy)
    train_files = schema.partition_pattern(cfg.data_dir, cfg.train_partition)
    train_ds = strategy.distribute_datasets_from_function(lambda ctx: to_keras(reader.make_dataset(
        train_files, cfg.reader, training=True, repeat=True, seed=cfg.seed, input_context=ctx), cfg))
    eval_files = schema.partition_pattern(cfg.data_dir, cfg.eval_partition)
    eval_ds = to_keras(reader.make_dataset(eval_files, cfg.reader, training=False), cfg)
    # A known length: Keras then shows validation progress and does not warn at its end.
    eval_ds = eval_ds.apply(tf.data.experimental.assert_cardinality(eval_batches(meta, cfg)))
    with strategy.scope():
        model = build_model(cfg.model)
        if cfg.init_from and not os.path.exists(os.path.join(run_dir, "backup")):
            for src, n in warm_start(model, cfg).items():
                print(f"warm start: {n} tensors from {checkpoint_path(src)}")
        compile_model(model, cfg)
    callbacks = [
        MeanCCC(cfg.model.label_names),
        StopOnNaN(run_dir),
        # Kept after the last epoch, so re-running a finished run is a no-op and more epochs extend it.
        keras.callbacks.BackupAndRestore(os.path.join(run_dir, "backup"), delete_checkpoint=False),
        keras.callbacks.ModelCheckpoint(checkpoint_path(run_dir, "best"), monitor=MONITOR, mode="max",
                                        save_best_only=True, initial_value_threshold=_best_so_far(run_dir)),
        keras.callbacks.ModelCheckpoint(checkpoint_path(run_dir, "last")),
        keras.callbacks.CSVLogger(os.path.join(run_dir, "history.csv"), append=True),
        keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False),
    ]
    if verbose is None:  # a progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    history = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.epochs, steps_per_epoch=cfg.steps_per_epoch,
                        callbacks=callbacks, verbose=verbose)
    if not history.epoch:
        print(f"{run_dir}: all {cfg.epochs} epochs are done already; nothing to train")
    return history
