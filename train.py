r"""Trains an emotion model on converted TFRecords.

  python train.py --flagfile=flags/demo_audio.flags
  python train.py --data_dir=tfrecords/recola --modalities=audio --run_dir=runs/audio

Re-running the same command resumes the run from its last epoch. The defaults are
the paper's configuration (SPEC); every number is a flag.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

from emotion_e2e import config as C

A, V, R, RD, O, T = C.AudioNetConfig, C.VisualNetConfig, C.RecurrentConfig, C.ReaderConfig, C.OptimizerConfig, C.TrainConfig
AUG = C.AugmentConfig

# Data and run.
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Converted corpus: {partition}-*.tfrecord and metadata.json.")
_RUN_DIR = flags.DEFINE_string("run_dir", None, "Where config, checkpoints, history and TensorBoard logs go.")
_MODALITIES = flags.DEFINE_list("modalities", list(C.MODALITIES), "audio, video or both (multimodal).")
_LABELS = flags.DEFINE_list("label_names", [], "Label dimensions to learn (default: all in metadata.json).")
_TRAIN_PART = flags.DEFINE_string("train_partition", T.train_partition, "Partition to train on.")
_EVAL_PART = flags.DEFINE_string("eval_partition", T.eval_partition, "Partition for the best-checkpoint choice.")
_INIT_FROM = flags.DEFINE_list("init_from", [], "Unimodal run directories whose feature networks start this run.")
# Schedule, optimiser, reader.
_EPOCHS = flags.DEFINE_integer("epochs", T.epochs, "Epochs.")
_STEPS = flags.DEFINE_integer("steps_per_epoch", T.steps_per_epoch, "Training steps per epoch.")
_SEED = flags.DEFINE_integer("seed", T.seed, "Random seed.")
_LR = flags.DEFINE_float("learning_rate", O.learning_rate, "Adam learning rate.")
_ADAM_EPS = flags.DEFINE_float("adam_epsilon", O.epsilon, "Adam epsilon.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", RD.seq_len, "Frames per training sequence.")
_BATCH = flags.DEFINE_integer("batch_size", RD.batch_size, "Sequences per (global) batch.")
_SHUFFLE = flags.DEFINE_integer("shuffle_buffer", RD.shuffle_buffer, "Training windows in the shuffle buffer.")
_CYCLE = flags.DEFINE_integer("cycle_length", RD.cycle_length, "Recordings read at once in training.")
_AUGMENT = flags.DEFINE_bool("augment", True, "Face augmentation in training.")
_AUG_RESIZE = flags.DEFINE_integer("augment_resize", AUG.resize, "Faces are resized to this, then randomly cropped.")
_AUG_SAT = flags.DEFINE_list("augment_saturation", [str(AUG.saturation_lower), str(AUG.saturation_upper)],
                             "Random saturation factor range.")
_AUG_BRIGHT = flags.DEFINE_float("augment_brightness", AUG.brightness_delta, "Random brightness delta.")
# Audio network.
_A_DROP = flags.DEFINE_float("audio_dropout", A.input_dropout, "Dropout on the raw audio input.")
_A_F1 = flags.DEFINE_integer("audio_conv1_filters", A.conv1_filters, "First conv filters.")
_A_K1 = flags.DEFINE_integer("audio_conv1_kernel", A.conv1_kernel, "First conv kernel (samples).")
_A_POOL = flags.DEFINE_integer("audio_pool", A.pool1, "Max-pool over time after the first conv.")
_A_F2 = flags.DEFINE_integer("audio_conv2_filters", A.conv2_filters, "Second conv filters.")
_A_K2 = flags.DEFINE_integer("audio_conv2_kernel", A.conv2_kernel, "Second conv kernel.")
_A_CPOOL = flags.DEFINE_integer("audio_channel_pool", A.channel_pool, "Max-pool across channels, group size.")
_A_BN_M = flags.DEFINE_float("audio_bn_momentum", A.bn_momentum, "Audio batch-norm momentum.")
_A_BN_E = flags.DEFINE_float("bn_epsilon", A.bn_epsilon, "Audio batch-norm epsilon.")
_L2 = flags.DEFINE_float("l2", A.l2, "L2 weight decay on kernels (audio and visual).")
# Visual network.
_V_NET = flags.DEFINE_enum("visual_net", V.backbone, list(C.VISUAL_BACKBONES), "Face backbone (paper: resnet50).")
_V_WEIGHTS = flags.DEFINE_string("visual_weights", V.weights, "none, imagenet (downloads; opt-in) or a local file.")
_V_BN_M = flags.DEFINE_float("visual_bn_momentum", V.bn_momentum, "Visual batch-norm momentum.")
# Recurrent part.
_LSTM = flags.DEFINE_enum("lstm", R.cell, ["peephole", "standard"], "peephole (paper) or standard (cuDNN-eligible).")
_LSTM_LAYERS = flags.DEFINE_integer("lstm_layers", R.layers, "Stacked LSTM layers.")
_LSTM_UNITS = flags.DEFINE_integer("lstm_units", R.units, "Units per LSTM layer.")
_CELL_CLIP = flags.DEFINE_float("cell_clip", R.cell_clip, "Peephole cell-state clipping.")
_FORGET_BIAS = flags.DEFINE_float("forget_bias", R.forget_bias, "Forget-gate bias.")
# Hardware.
_STRATEGY = flags.DEFINE_enum("strategy", T.strategy, ["default", "mirrored"], "tf.distribute strategy.")
_PRECISION = flags.DEFINE_enum("mixed_precision", T.mixed_precision, ["none", "bf16", "fp16"], "Mixed precision.")
_JIT = flags.DEFINE_bool("jit_compile", T.jit_compile, "XLA-compile the train step.")

flags.mark_flags_as_required(["data_dir", "run_dir"])


def config_from_flags() -> C.TrainConfig:
    from emotion_e2e.data import metadata  # noqa: PLC0415

    meta = metadata.read(_DATA_DIR.value)
    labels = tuple(_LABELS.value) or tuple(meta["label_names"])
    modalities = tuple(_MODALITIES.value)
    face_size = meta["face"]["size"]
    augment = C.AugmentConfig(resize=_AUG_RESIZE.value, saturation_lower=float(_AUG_SAT.value[0]),
                              saturation_upper=float(_AUG_SAT.value[1]),
                              brightness_delta=_AUG_BRIGHT.value) if _AUGMENT.value else None
    return C.TrainConfig(
        data_dir=_DATA_DIR.value,
        reader=C.ReaderConfig(seq_len=_SEQ_LEN.value, batch_size=_BATCH.value, modalities=modalities,
                              label_names=labels, face_size=face_size, samples_per_frame=meta["samples_per_frame"],
                              shuffle_buffer=_SHUFFLE.value, cycle_length=_CYCLE.value, augment=augment),
        model=C.ModelConfig(
            modalities=modalities, label_names=labels,
            audio=C.AudioNetConfig(samples_per_frame=meta["samples_per_frame"], input_dropout=_A_DROP.value,
                                   conv1_filters=_A_F1.value, conv1_kernel=_A_K1.value, pool1=_A_POOL.value,
                                   conv2_filters=_A_F2.value, conv2_kernel=_A_K2.value,
                                   channel_pool=_A_CPOOL.value, bn_momentum=_A_BN_M.value,
                                   bn_epsilon=_A_BN_E.value, l2=_L2.value),
            visual=C.VisualNetConfig(backbone=_V_NET.value, weights=_V_WEIGHTS.value, face_size=face_size,
                                     l2=_L2.value, bn_momentum=_V_BN_M.value),
            recurrent=C.RecurrentConfig(layers=_LSTM_LAYERS.value, units=_LSTM_UNITS.value, cell=_LSTM.value,
                                        cell_clip=_CELL_CLIP.value, forget_bias=_FORGET_BIAS.value)),
        optimizer=C.OptimizerConfig(learning_rate=_LR.value, epsilon=_ADAM_EPS.value),
        train_partition=_TRAIN_PART.value, eval_partition=_EVAL_PART.value, epochs=_EPOCHS.value,
        steps_per_epoch=_STEPS.value, seed=_SEED.value, strategy=_STRATEGY.value,
        mixed_precision=_PRECISION.value, jit_compile=_JIT.value, init_from=tuple(_INIT_FROM.value))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from emotion_e2e import training  # noqa: PLC0415
    from emotion_e2e.errors import DataError  # noqa: PLC0415

    try:
        cfg = config_from_flags()
        training.check_config(cfg, _RUN_DIR.value)
    except (ValueError, DataError) as e:  # ConfigError, DataError and invalid config values
        sys.exit(f"error: {e}")
    training.train(cfg, _RUN_DIR.value)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
