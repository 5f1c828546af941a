"""Keras' batch norm, convolutions and Adam, computed with fewer and
larger TF kernels (docs/design.md §13). Each gives the Keras original's results up to
floating-point rounding, with the same weights, names and config; only the kernels differ.

Where a ResNet-50 train step spent its time on this machine's 2-core CPU before (batch
1 × 25 frames; ``python -m emotion_e2e.benchmark --suite=models`` prints the breakdown):

- ``FusedBatchNormalization``: Keras 3's BatchNormalization computes moments and the
  normalisation as a dozen element-wise ops (and their gradients), and under
  ``mixed_bfloat16`` casts its input to float32 and back. TF's fused kernel
  (``FusedBatchNormV3``, oneDNN on CPU) does it in one pass per direction, on bf16 input.
  The audio network's batch norms (40 channels, 300 × 640 steps a step) need two things more:
  oneDNN's bf16 kernel for a channel count that is not a multiple of 16 is its reference one,
  2–30× slower (by layout) than its float32 kernel, casts included (so those compute in float32); and a
  ``(n, steps, c)`` input runs 2–4× faster as ``(n·steps, 1, 1, c)`` than as ``(n, steps, 1, c)``.
- ``MatmulConv2D``: a 1×1 convolution is a matrix product over all pixels. oneDNN's
  convolution kernels compute the weight gradient of a 1×1 convolution on small feature
  maps (ResNet-50's last block is 3×3) at a fraction of its matmul rate, 5× slower than a
  matmul in bf16 (AMX), 1.3–1.7× in fp32; the weight gradient of a 3×3 convolution on a
  3×3 or 6×6 map, too, is faster as one matmul of the input's patches.
- ``PhaseConv1D``: oneDNN computes a Conv1D as a 2-D convolution of height 1; with the audio
  network's few channels (1 and 40) it runs below its matmul rate. The same convolution on
  blocks of consecutive steps, their channels side by side (20 → 800 channels for conv1,
  160 → 160 for conv2), runs faster forward and backward.
- ``FusedAdam``: Keras' Adam updates a variable with ten element-wise passes over it;
  ``ResourceApplyAdam`` does one. On 23.5 M parameters that is most of the optimizer's time.

The weight decay (``layers.HalfL2``) is ``l · tf.nn.l2_loss(w)`` for the same reason: one
kernel instead of a square and a sum.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from emotion_e2e.models.layers import PACKAGE

FUSED_RANKS = (3, 4)  # (n, steps, c) runs as a 4-D (see FusedBatchNormalization.call); (n, h, w, c) as it is
FUSED_DTYPES = ("float32", "bfloat16", "float16")  # TF's fused batch norm has no float64 kernel
# oneDNN's fast bf16 batch-norm kernels work on blocks of this many channels; for other channel
# counts (the audio network's 40) it runs its reference kernel, measured 4-30× slower than the
# float32 kernel on the same data, casts included.
ONEDNN_CHANNEL_BLOCK = 16


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` on TF's fused batch-norm kernel.

    The same weights, config, outputs and moving statistics (the biased batch variance, as
    Keras averages) as the Keras layer. Runs fused for channels-last inputs of rank 3 or 4
    without a mask, computed in a dtype the kernel has (``FUSED_DTYPES``); otherwise, and for a
    synchronized batch norm under more than one replica (whose moments are all-reduced across
    replicas), it is the Keras layer.
    """

    def _fused(self, inputs, mask) -> bool:
        if (mask is not None or len(inputs.shape) not in FUSED_RANKS or self.axis not in (-1, len(inputs.shape) - 1)
                or self.compute_dtype not in FUSED_DTYPES):
            return False
        replica = tf.distribute.get_replica_context()
        return not (self.synchronized and replica is not None and replica.num_replicas_in_sync > 1)

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        x = ops.cast(inputs, self.compute_dtype)
        shape, channels = tf.shape(x), inputs.shape[-1]
        if x.dtype != tf.float32 and channels % ONEDNN_CHANNEL_BLOCK:
            x = tf.cast(x, tf.float32)  # oneDNN's bf16 kernel for these channel counts is its slow reference one
        if len(inputs.shape) == 3:  # (n, steps, c) as (n·steps, 1, 1, c) in float32, (n, steps, 1, c) otherwise
            x = tf.reshape(x, (-1, 1, 1, channels)) if x.dtype == tf.float32 else tf.expand_dims(x, 2)
        gamma = self.gamma if self.scale else tf.ones_like(self.moving_mean)
        beta = self.beta if self.center else tf.zeros_like(self.moving_mean)
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, epsilon=self.epsilon,
                                                                 is_training=True)
            # The kernel returns the unbiased variance n/(n−1)·σ²; Keras' moving average takes σ².
            n = tf.cast(tf.size(x, out_type=tf.int64) // tf.cast(tf.shape(x)[-1], tf.int64), tf.float32)
            variance = tf.where(n > 1, variance * (n - 1) / tf.maximum(n, 1), tf.zeros_like(variance))
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(x, gamma, beta, mean=self.moving_mean,
                                                       variance=self.moving_variance, epsilon=self.epsilon,
                                                       is_training=False)
        y = ops.cast(y, self.compute_dtype)
        return tf.reshape(y, shape) if len(inputs.shape) == 3 else y


# Output maps up to this many pixels (by compute dtype) get the matmul filter gradient of a
# stride-1 'same' convolution: measured on this CPU, it pays on ResNet-50's 3×3 maps in fp32
# (1.1×) and on its 3×3 and 6×6 maps in bf16 (2× and 1.5×), and loses on larger maps.
MATMUL_FILTER_GRADIENT_PIXELS = {"float32": 9, "bfloat16": 36}


def _patches(x, kernel_size: tuple[int, int]):
    """``(n, h, w, c)`` → ``(n·h·w, kh·kw·c)``: the 'same'-padded input under each output pixel
    of a stride-1 convolution, taps in the kernel's (row, column, channel) order."""
    (kh, kw), (h, w) = kernel_size, x.shape[1:3]
    x = tf.pad(x, [[0, 0], [(kh - 1) // 2, kh // 2], [(kw - 1) // 2, kw // 2], [0, 0]])
    taps = [x[:, i:i + h, j:j + w, :] for i in range(kh) for j in range(kw)]
    return tf.reshape(tf.concat(taps, axis=-1), (-1, kh * kw * x.shape[-1]))


@tf.custom_gradient
def _conv_matmul_filter_gradient(x, kernel):
    """``tf.nn.conv2d(x, kernel, 1, 'SAME')`` whose kernel gradient is one matmul of the
    input's patches with the output gradient; the rest is TF's convolution."""

    def grad(dy):
        dx = tf.compat.v1.nn.conv2d_backprop_input(tf.shape(x), kernel, dy, [1, 1, 1, 1], "SAME")
        dw = tf.matmul(_patches(x, kernel.shape[:2]), tf.reshape(dy, (-1, kernel.shape[-1])), transpose_a=True)
        return dx, tf.reshape(dw, kernel.shape)

    return tf.nn.conv2d(x, kernel, 1, "SAME"), grad


@keras.saving.register_keras_serializable(package=PACKAGE)
class MatmulConv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D`` whose 1×1 convolutions run as one matrix product:
    ``(n, h, w, c) → (n·h'·w', c) · (c, filters) → (n, h', w', filters)``, the input
    subsampled first when strided (for a 1×1 kernel 'same' and 'valid' sample the same
    pixels); and whose stride-1 'same' convolutions on small maps
    (``MATMUL_FILTER_GRADIENT_PIXELS``) compute their kernel gradient as one matmul of the
    input's patches with the output gradient. Everything else is Keras' convolution. Same
    weights and config as the Keras layer."""

    def convolution_op(self, inputs, kernel):
        if (tuple(self.dilation_rate) != (1, 1) or self.groups != 1 or self.data_format != "channels_last"
                or None in inputs.shape[1:]):
            return super().convolution_op(inputs, kernel)
        if tuple(self.kernel_size) == (1, 1):
            sh, sw = self.strides
            if (sh, sw) != (1, 1):
                inputs = inputs[:, ::sh, ::sw, :]
            channels = inputs.shape[-1]
            y = tf.matmul(tf.reshape(inputs, (-1, channels)), tf.reshape(kernel, (channels, self.filters)))
            return tf.reshape(y, tf.concat([tf.shape(inputs)[:-1], [self.filters]], axis=0))
        pixels = inputs.shape[1] * inputs.shape[2]
        if (tuple(self.strides) == (1, 1) and self.padding == "same"
                and pixels <= MATMUL_FILTER_GRADIENT_PIXELS.get(keras.backend.standardize_dtype(kernel.dtype), 0)):
            return _conv_matmul_filter_gradient(inputs, tf.convert_to_tensor(kernel))  # a value, not the variable
        return super().convolution_op(inputs, kernel)


def _phase_kernel(kernel, phases: int):
    """A Conv1D kernel ``(k, c, f)`` as the kernel of the same convolution on ``phases``
    consecutive steps at a time: ``(m, phases·c, phases·f)`` with ``m = ⌈(k + phases − 1) / phases⌉``,

        W'[j, p·c + i, r·f + o] = W[phases·j + p − r, i, o]   (zero outside 0 … k−1),

    built as one matmul with a constant 0/1 matrix, so its gradient is one matmul too."""
    k, c, f = kernel.shape
    m = -(-(k + phases - 1) // phases)
    j, p, r = np.meshgrid(np.arange(m), np.arange(phases), np.arange(phases), indexing="ij")
    tap = (phases * j + p - r).reshape(-1)
    select = np.zeros((tap.size, k), np.float32)
    inside = (tap >= 0) & (tap < k)
    select[np.flatnonzero(inside), tap[inside]] = 1
    w = tf.matmul(tf.constant(select, kernel.dtype), tf.reshape(kernel, (k, c * f)))
    w = tf.transpose(tf.reshape(w, (m * phases, phases, c, f)), (0, 2, 1, 3))
    return tf.reshape(w, (m, phases * c, phases * f))


def phase_conv1d(x, kernel, phases: int, bias=None):
    """``tf.nn.conv1d(x, kernel, 1, 'SAME') + bias`` for ``x`` ``(n, steps, c)``, ``steps`` a
    multiple of ``phases``, computed as a 'valid' convolution over blocks of ``phases`` steps: the
    input is padded as 'SAME' pads it (then to whole blocks) and read as ``(n, 1, blocks, phases·c)``,
    the output ``(n, 1, steps / phases, phases·f)`` read back as ``(n, steps, f)``. The same sums in
    another order, with ``phases`` times the channels and ``1/phases`` the steps. The bias is added
    before the read-back, where oneDNN fuses it into the convolution."""
    k, _, f = kernel.shape
    steps, channels = x.shape[1], x.shape[2]
    w = _phase_kernel(kernel, phases)
    left = (k - 1) // 2
    padded = steps + phases * (w.shape[0] - 1)
    x = tf.pad(x, [[0, 0], [left, padded - steps - left], [0, 0]])
    y = tf.nn.conv2d(tf.reshape(x, (-1, 1, padded // phases, phases * channels)), w[None], 1, "VALID")
    if bias is not None:
        y = tf.nn.bias_add(y, tf.tile(bias, [phases]))
    return tf.reshape(y, (-1, steps, f))


@keras.saving.register_keras_serializable(package=PACKAGE)
class PhaseConv1D(keras.layers.Conv1D):
    """``keras.layers.Conv1D`` whose stride-1 'same' convolution on inputs of a fixed length that
    ``phases`` divides runs as ``phase_conv1d``: ``phases`` consecutive steps as one, their
    channels side by side. oneDNN computes a Conv1D as a 2-D convolution of height 1, and with few
    channels (the audio network's 1 and 40) below its matmul rate; with ``phases`` times the channels
    it runs faster, forward and backward, though it multiplies by the kernel's zero-padded copy
    (``(k + phases − 1) / k`` times the work, rounded up to whole blocks). Everything else is Keras'
    convolution. Same weights as the Keras layer; the config adds ``phases``."""

    def __init__(self, *args, phases: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.phases = int(phases)

    def _phased(self, inputs) -> bool:
        steps = inputs.shape[1]
        return not (self.phases == 1 or tuple(self.strides) != (1,) or tuple(self.dilation_rate) != (1,)
                    or self.groups != 1 or self.padding != "same" or self.data_format != "channels_last"
                    or steps is None or steps % self.phases)

    def call(self, inputs):
        if not self._phased(inputs):
            return super().call(inputs)
        y = phase_conv1d(inputs, tf.convert_to_tensor(self.kernel), self.phases,  # values, not the variables
                         tf.convert_to_tensor(self.bias) if self.use_bias else None)
        return y if self.activation is None else self.activation(y)

    def get_config(self):
        return {**super().get_config(), "phases": self.phases}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose update of a variable is TF's ``ResourceApplyAdam``,

        m ← m + (g − m)(1 − β₁),  v ← v + (g² − v)(1 − β₂),
        w ← w − lr · √(1 − β₂ᵗ) / (1 − β₁ᵗ) · m / (√v + ε),

    Keras' own formula, in one kernel. ``amsgrad`` and sparse gradients are Keras' update."""

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = ops.cast(self.iterations + 1, dtype)
        # Numbers converted in the variable's dtype: ops.cast rounds a Python float through float32.
        beta_1, beta_2, epsilon = (ops.cast(x, dtype) if tf.is_tensor(x) else ops.convert_to_tensor(x, dtype)
                                   for x in (self.beta_1, self.beta_2, self.epsilon))
        index = self._get_variable_index(variable)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
            beta1_power=ops.power(beta_1, step), beta2_power=ops.power(beta_2, step),
            lr=ops.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2, epsilon=epsilon,
            grad=ops.cast(gradient, dtype))
        return None
