r"""Trains an emotion model on converted TFRecords.

  python train.py --flagfile=flags/demo.flags --data_dir=tfrecords/demo --modalities=audio --run_dir=runs/a
  python train.py --flagfile=flags/recola_audio.flags

Re-running the same command resumes the run from its last backup (an epoch end, or a step
with --backup_every_steps). The defaults are the
paper's configuration (docs/design.md §5, §6); every number is a flag, and every flag's
default and choices come from the configuration dataclasses in emotion_e2e/config.py.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from emotion_e2e import config
from emotion_e2e.cli import run_cli
from emotion_e2e.errors import ConfigError, DataError

_AUDIO = config.AudioNetConfig()
_FACE = config.FaceNetConfig()
_RNN = config.RecurrentConfig()
_READER = config.ReaderConfig()
_AUGMENT = config.AugmentConfig()
_OPTIMIZER = config.OptimizerConfig()
_TRAIN = config.TrainConfig(data_dir="")

# Data and run.
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Converted corpus: {partition}-*.tfrecord and metadata.json.")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Where config, checkpoints, history and TensorBoard logs go.")
_MODALITIES = flags.DEFINE_list("modalities", list(config.MODALITIES),
                                f"One or both of {', '.join(config.MODALITIES)} (both: multimodal).")
_LABELS = flags.DEFINE_list("label_names", [], "Label dimensions to learn (default: all of the training partition).")
_TRAIN_PART = flags.DEFINE_string("train_partition", _TRAIN.train_partition, "Partition to train on.")
_EVAL_PART = flags.DEFINE_string("eval_partition", _TRAIN.eval_partition, "Partition for the best-checkpoint choice.")
_INIT_FROM = flags.DEFINE_list("init_from", [], "Unimodal run directories whose feature networks start this run.")
# Schedule, optimiser, reader.
_EPOCHS = flags.DEFINE_integer("epochs", _TRAIN.epochs, "Epochs.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", _TRAIN.steps_per_epoch, "Training steps per epoch.")
_SEED = flags.DEFINE_integer("seed", _TRAIN.seed, "Random seed.")
_LR = flags.DEFINE_float("learning_rate", _OPTIMIZER.learning_rate, "Adam learning rate.")
_ADAM_EPS = flags.DEFINE_float("adam_epsilon", _OPTIMIZER.epsilon, "Adam epsilon.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", _READER.seq_len, "Frames per training sequence.")
_EVAL_SEQ_LEN = flags.DEFINE_integer("eval_seq_len", _READER.eval_seq_len,
                                     "Frames per validation window (and eval.py's default), whatever --seq_len is.")
_BATCH = flags.DEFINE_integer("batch_size", _READER.batch_size, "Sequences per (global) batch.")
_SHUFFLE = flags.DEFINE_integer("shuffle_buffer", _READER.shuffle_buffer, "Training windows in the shuffle buffer.")
_CYCLE = flags.DEFINE_integer("cycle_length", _READER.cycle_length, "Recordings read at once in training.")
_AUGMENT_ON = flags.DEFINE_bool("augment", _READER.augment is not None, "Face augmentation in training.")
_AUG_RESIZE = flags.DEFINE_integer("augment_resize", _AUGMENT.resize, "Faces are resized to this, then randomly cropped.")
_AUG_SAT = flags.DEFINE_list("augment_saturation", [str(_AUGMENT.saturation_lower), str(_AUGMENT.saturation_upper)],
                             "Random saturation factor range: lower,upper.")
_AUG_BRIGHT = flags.DEFINE_float("augment_brightness", _AUGMENT.brightness_delta, "Random brightness delta.")
_AUG_PER = flags.DEFINE_enum("augment_per", _AUGMENT.per, list(config.AUGMENT_PER),
                             "Draw the crop and colour changes anew for every frame, or once per window.")
# Audio network.
_A_DROP = flags.DEFINE_float("audio_dropout", _AUDIO.input_dropout, "Dropout on the raw audio input.")
_A_F1 = flags.DEFINE_integer("audio_conv1_filters", _AUDIO.conv1_filters, "First conv filters.")
_A_K1 = flags.DEFINE_integer("audio_conv1_kernel", _AUDIO.conv1_kernel, "First conv kernel (samples).")
_A_POOL = flags.DEFINE_integer("audio_pool", _AUDIO.pool1, "Max-pool over time after the first conv.")
_A_F2 = flags.DEFINE_integer("audio_conv2_filters", _AUDIO.conv2_filters, "Second conv filters.")
_A_K2 = flags.DEFINE_integer("audio_conv2_kernel", _AUDIO.conv2_kernel, "Second conv kernel.")
_A_CPOOL = flags.DEFINE_integer("audio_channel_pool", _AUDIO.channel_pool, "Max-pool across channels, group size.")
_A_BN_M = flags.DEFINE_float("audio_bn_momentum", _AUDIO.bn_momentum, "Audio batch-norm momentum.")
_A_BN_E = flags.DEFINE_float("bn_epsilon", _AUDIO.bn_epsilon, "Audio batch-norm epsilon.")
_L2 = flags.DEFINE_float("l2", _AUDIO.l2, "L2 weight decay on kernels (audio and face networks).")
# Face network.
_F_NET = flags.DEFINE_enum("face_net", _FACE.backbone, list(config.FACE_BACKBONES),
                           "Face backbone: resnet50 (paper: TF-slim's ResNet-v1-50), resnet50_keras "
                           "(keras.applications' ResNet50, the one with ImageNet weights), resnet18, resnet10.")
_F_WEIGHTS = flags.DEFINE_string("face_weights", _FACE.weights,
                                  "none, imagenet (resnet50_keras only; downloads; opt-in) or a local file.")
_F_BN_M = flags.DEFINE_float("face_bn_momentum", _FACE.bn_momentum, "Face network batch-norm momentum.")
# Recurrent part.
_LSTM = flags.DEFINE_enum("lstm", _RNN.cell, list(config.RECURRENT_CELLS), "peephole (paper) or standard (cuDNN-eligible).")
_LSTM_LAYERS = flags.DEFINE_integer("lstm_layers", _RNN.layers, "Stacked LSTM layers.")
_LSTM_UNITS = flags.DEFINE_integer("lstm_units", _RNN.units, "Units per LSTM layer.")
_CELL_CLIP = flags.DEFINE_float("cell_clip", _RNN.cell_clip, "Peephole cell-state clipping.")
_FORGET_BIAS = flags.DEFINE_float("forget_bias", _RNN.forget_bias, "Forget-gate bias.")
# Hardware.
_STRATEGY = flags.DEFINE_enum("strategy", _TRAIN.strategy, list(config.STRATEGIES),
                              "tf.distribute strategy: default (one device), mirrored (this machine's GPUs), "
                              "multi_worker (the cluster in TF_CONFIG), tpu (--tpu).")
_TPU = flags.DEFINE_string("tpu", _TRAIN.tpu, "--strategy=tpu: a TPU name, 'local' on a TPU VM, or grpc://host:port.")
_CONNECT = flags.DEFINE_float("connect_timeout", _TRAIN.connect_timeout,
                              "Seconds a multi_worker or tpu strategy waits for its cluster before it gives up.")
_STORAGE_TIMEOUT = flags.DEFINE_float("storage_timeout", config.STORAGE_TIMEOUT,
                                      "Seconds the first look-up in a remote --data_dir, --run_dir or --init_from "
                                      "(s3://, gs://, hdfs://...) may take before training stops: the store could "
                                      "not be reached. Local paths are not looked up.")
# Fault tolerance.
_BACKUP_EVERY = flags.DEFINE_integer("backup_every_steps", _TRAIN.backup_every_steps,
                                     "Back up the training state every N optimizer steps besides every epoch end "
                                     "(0: epoch ends only); a killed run re-run with the same command resumes there.")
_PRECISION = flags.DEFINE_enum("mixed_precision", _TRAIN.mixed_precision, list(config.PRECISIONS), "Mixed precision.")
_JIT = flags.DEFINE_bool("jit_compile", _TRAIN.jit_compile, "XLA-compile the train step.")

flags.mark_flags_as_required(["data_dir", "run_dir"])


def config_from_flags(meta: dict) -> config.TrainConfig:
    """The run's configuration from the flags and the data's metadata (``meta``)."""
    from emotion_e2e.data import metadata  # noqa: PLC0415

    if _TRAIN_PART.value not in meta["partitions"]:
        raise ConfigError(f"--train_partition={_TRAIN_PART.value} is not in {_DATA_DIR.value}; "
                                 f"it holds {sorted(meta['partitions'])}")
    labels = tuple(_LABELS.value) or tuple(metadata.label_names(meta, _TRAIN_PART.value))
    if len(_AUG_SAT.value) != 2:
        raise ConfigError(f"--augment_saturation takes two numbers, lower,upper. Received: {_AUG_SAT.value}")
    augment = config.AugmentConfig(resize=_AUG_RESIZE.value, saturation_lower=float(_AUG_SAT.value[0]),
                                   saturation_upper=float(_AUG_SAT.value[1]),
                                   brightness_delta=_AUG_BRIGHT.value, per=_AUG_PER.value) if _AUGMENT_ON.value else None
    return config.TrainConfig(
        data_dir=_DATA_DIR.value,
        inputs=config.InputConfig(modalities=tuple(_MODALITIES.value), label_names=labels,
                                  samples_per_frame=meta["samples_per_frame"], face_size=meta["face"]["size"]),
        reader=config.ReaderConfig(seq_len=_SEQ_LEN.value, eval_seq_len=_EVAL_SEQ_LEN.value, batch_size=_BATCH.value, shuffle_buffer=_SHUFFLE.value,
                                   cycle_length=_CYCLE.value, augment=augment),
        model=config.ModelConfig(
            audio=config.AudioNetConfig(input_dropout=_A_DROP.value, conv1_filters=_A_F1.value,
                                        conv1_kernel=_A_K1.value, pool1=_A_POOL.value, conv2_filters=_A_F2.value,
                                        conv2_kernel=_A_K2.value, channel_pool=_A_CPOOL.value,
                                        bn_momentum=_A_BN_M.value, bn_epsilon=_A_BN_E.value, l2=_L2.value),
            face=config.FaceNetConfig(backbone=_F_NET.value, weights=_F_WEIGHTS.value, l2=_L2.value,
                                      bn_momentum=_F_BN_M.value),
            recurrent=config.RecurrentConfig(layers=_LSTM_LAYERS.value, units=_LSTM_UNITS.value, cell=_LSTM.value,
                                             cell_clip=_CELL_CLIP.value, forget_bias=_FORGET_BIAS.value)),
        optimizer=config.OptimizerConfig(learning_rate=_LR.value, epsilon=_ADAM_EPS.value),
        train_partition=_TRAIN_PART.value, eval_partition=_EVAL_PART.value, epochs=_EPOCHS.value,
        steps_per_epoch=_STEPS.value, seed=_SEED.value, strategy=_STRATEGY.value, tpu=_TPU.value,
        connect_timeout=_CONNECT.value, backup_every_steps=_BACKUP_EVERY.value,
        mixed_precision=_PRECISION.value, jit_compile=_JIT.value, init_from=tuple(_INIT_FROM.value))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from emotion_e2e import run_dir as run_lib  # noqa: PLC0415
    from emotion_e2e import training  # noqa: PLC0415
    from emotion_e2e.data import metadata  # noqa: PLC0415

    try:
        run_lib.wait_for_storage(_DATA_DIR.value, _RUN_DIR.value, *_INIT_FROM.value, timeout=_STORAGE_TIMEOUT.value)
        meta = metadata.read(_DATA_DIR.value)  # read once for the whole run
        cfg = config_from_flags(meta)
    except ValueError as e:  # DataError, ConfigError and invalid config values
        sys.exit(f"error: {e}")
    try:
        training.train(cfg, _RUN_DIR.value, meta=meta)  # checks everything before building a graph
    except (ConfigError, DataError, FloatingPointError) as e:  # bad configuration or data; a NaN loss
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_cli(main)
