"""The raw-audio CNN (docs/design.md §5): one 40 ms frame of 640 samples → 1280 features.

    (frames, 640) → dropout → (640, 1) → conv1 → BN → ReLU → max-pool 2 over time (320, 40)
                  → conv2 → BN → ReLU → max-pool across channels in groups of 10 (320, 4)
                  → flatten (frames, 1280)

The channel pooling follows the authors' TF1 code: channels ``10g .. 10g+9`` are pooled
into feature ``g`` at every time step, and the flattened index is ``4·t + g``.

As in the authors' slim graph, the convolutions have no bias (the batch norm's offset
takes its place) and carry the weight decay ``cfg.l2 · Σw² / 2`` on their kernels.
"""

from __future__ import annotations

import keras

from emotion_e2e.config import AudioNetConfig
from emotion_e2e.models.kernels import FusedBatchNormalization, PhaseConv1D
from emotion_e2e.models.layers import l2_regularizer

KERNEL_INITIALIZER = "he_normal"
# Steps per block of each convolution run as ``PhaseConv1D`` (docs/design.md §13), the fastest
# measured on this CPU for 640- and 320-step inputs, fp32 and bf16: conv1 (1 channel, kernel 20)
# as 20 → 800 channels, conv2 (40 channels, kernel 40) as 160 → 160.
CONV_PHASES = {"conv1": 20, "conv2": 4}


def apply_conv_block(x, filters: int, kernel_size: int, cfg: AudioNetConfig, name: str):
    """Conv1D (stride 1, same padding) → batch norm → ReLU: ``(frames, steps, c)`` →
    ``(frames, steps, filters)``."""
    x = PhaseConv1D(filters, kernel_size, padding="same", use_bias=False, kernel_initializer=KERNEL_INITIALIZER,
                    kernel_regularizer=l2_regularizer(cfg.l2), phases=CONV_PHASES[name], name=f"{name}_conv")(x)
    x = FusedBatchNormalization(momentum=cfg.bn_momentum, epsilon=cfg.bn_epsilon, synchronized=True,
                                name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def apply_channel_max_pool(x, group: int, name: str):
    """Max over consecutive groups of ``group`` channels, then flatten:
    ``(frames, steps, c)`` → ``(frames, steps · c / group)``."""
    steps, channels = x.shape[1], x.shape[2]
    x = keras.layers.Reshape((steps, channels, 1), name=f"{name}_to_2d")(x)
    x = keras.layers.MaxPooling2D(pool_size=(1, group), name=f"{name}_max")(x)
    return keras.layers.Flatten(name=f"{name}_flatten")(x)


def build_audio_network(cfg: AudioNetConfig, samples_per_frame: int, name: str = "audio_network") -> keras.Model:
    """The per-frame audio network: ``(frames, samples_per_frame)`` float32 →
    ``(frames, cfg.num_features(samples_per_frame))`` (1280 with the defaults).

    The input dropout is active only with ``training=True``.
    """
    cfg.num_features(samples_per_frame)  # validates samples_per_frame against the pooling
    frames = keras.Input((samples_per_frame,), name="audio_frames")
    x = keras.layers.Dropout(cfg.input_dropout, name="input_dropout")(frames)
    x = keras.layers.Reshape((samples_per_frame, 1), name="add_channel")(x)
    x = apply_conv_block(x, cfg.conv1_filters, cfg.conv1_kernel, cfg, name="conv1")
    x = keras.layers.MaxPooling1D(cfg.pool1, name="pool1")(x)
    x = apply_conv_block(x, cfg.conv2_filters, cfg.conv2_kernel, cfg, name="conv2")
    x = apply_channel_max_pool(x, cfg.channel_pool, name="channel_pool")
    return keras.Model(frames, x, name=name)
