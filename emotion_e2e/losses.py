"""The concordance correlation coefficient in TensorFlow and the training loss ``1 − CCC``.

docs/design.md §1 and §6: for one label dimension,

    CCC(x, y) = 2·cov(x, y) / (var(x) + var(y) + (mean(x) − mean(y))²)

with *population* (divide-by-n, here divide-by-Σw) statistics for both variances and the
covariance, so ``CCC(x, x) == 1`` exactly. The loss of one output is ``1 − CCC`` computed over all
``batch × time`` values of that output at once (not per sequence, not per frame); the model's
total is ``Σ_d loss_weight_d · (1 − CCC_d)`` with ``loss_weight_d = 1/D`` (``model.compile``).

The padding mask enters the statistics as weights: a frame with weight 0 does not move any mean,
variance or covariance. Keras' default handling of ``sample_weight`` (multiply a per-element loss
by the weight, then average) would be wrong for CCC, which is not a mean of per-element terms, so
``CCCLoss`` overrides ``__call__``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

# Floor of the CCC denominator. A floor (not an additive term) leaves every CCC whose denominator is
# above it untouched, so CCC(x, x) == 1 to the last bit for any non-constant x; it only stops a
# division by zero when predictions and targets are both constant and equal (e.g. a fully padded
# batch), where CCC is undefined and the loss becomes 1 with zero gradient. Since
# |2·cov| <= var_x + var_y, |CCC| <= 1 holds whatever the floor; it is kept far below any variance
# float32 can resolve for labels in [-1, 1] (std 1e-6 → var 1e-12).
DEFAULT_EPSILON = 1e-12


def _compute_dtype(*tensors):
    """float64 stays float64; float16/bfloat16/float32 are computed in float32 (mixed precision)."""
    return tf.float64 if any(t.dtype == tf.float64 for t in tensors) else tf.float32


def broadcast_weights(weights, x):
    """``weights`` (e.g. ``(batch,)``, ``(batch, time)`` or ``(batch, time, 1)``) cast to ``x``'s dtype and
    broadcast to ``x``'s shape (e.g. ``(batch, time)``): trailing axes are added or squeezed first."""
    w = tf.cast(tf.convert_to_tensor(weights), x.dtype)
    if w.shape.rank is not None and x.shape.rank is not None:
        while w.shape.rank > x.shape.rank and w.shape[-1] == 1:
            w = tf.squeeze(w, axis=-1)
        while w.shape.rank < x.shape.rank:
            w = w[..., tf.newaxis]
    return tf.broadcast_to(w, tf.shape(x))


def ccc(x, y, weights=None, epsilon: float = DEFAULT_EPSILON):
    """Weighted concordance correlation coefficient over *all* values of ``x`` and ``y``.

    Args:
      x, y: tensors with the same number of elements, any shape (e.g. ``(batch, time)``; a trailing
        axis of 1 on one of them is fine). Computed in float32 (float64 if either is float64), so
        float16/bfloat16 outputs of a mixed-precision model are accepted.
      weights: optional, broadcastable to ``x`` (``(batch, time)`` padding mask of 1/0, or
        ``(batch,)``). Each value counts with its weight in every mean, variance and covariance
        (population statistics normalised by ``Σ weights``); weight 0 removes the value entirely.
      epsilon: floor of the denominator (see ``DEFAULT_EPSILON``).

    Returns:
      A scalar in [-1, 1]. ``0`` when all weights are 0.
    """
    x = tf.convert_to_tensor(x)
    y = tf.convert_to_tensor(y)
    dtype = _compute_dtype(x, y)
    x = tf.cast(x, dtype)
    y = tf.cast(y, dtype)
    if x.shape.is_fully_defined() and y.shape.is_fully_defined() and x.shape.num_elements() != y.shape.num_elements():
        raise ValueError(f"ccc: x and y must have the same number of values. Received: x.shape={x.shape}, "
                         f"y.shape={y.shape}")
    w = tf.ones_like(x) if weights is None else broadcast_weights(weights, x)
    x, y, w = tf.reshape(x, [-1]), tf.reshape(y, [-1]), tf.reshape(w, [-1])

    total = tf.reduce_sum(w)
    mean_x = tf.math.divide_no_nan(tf.reduce_sum(w * x), total)
    mean_y = tf.math.divide_no_nan(tf.reduce_sum(w * y), total)
    # Two-pass (centred) moments; var and cov use the same normalisation, so cov(x, x) is var(x)
    # bit for bit and CCC(x, x) == 1.
    dx = x - mean_x
    dy = y - mean_y
    var_x = tf.math.divide_no_nan(tf.reduce_sum(w * dx * dx), total)
    var_y = tf.math.divide_no_nan(tf.reduce_sum(w * dy * dy), total)
    cov = tf.math.divide_no_nan(tf.reduce_sum(w * dx * dy), total)
    denominator = var_x + var_y + tf.square(mean_x - mean_y)
    return 2.0 * cov / tf.maximum(denominator, tf.cast(epsilon, dtype))


@keras.saving.register_keras_serializable(package="emotion_e2e")
class CCCLoss(keras.losses.Loss):
    """``1 − CCC(y_true, y_pred)`` over every ``(batch, time)`` value of one output.

    Use one instance per label dimension:
    ``model.compile(loss={name: CCCLoss() for name in dims}, loss_weights={name: 1 / D ...})``.
    ``sample_weight`` (the reader's padding ``mask``, shape ``(batch, time)``) and a Keras mask on
    ``y_pred`` weight the values *inside* the statistics; they are not applied to the result. The
    returned scalar is float32 for float16/bfloat16/float32 inputs.

    Under a multi-replica ``tf.distribute`` strategy each replica computes the CCC of its own part
    of the batch and the value is divided by the number of replicas (as Keras does for its own
    losses), so the summed gradients are those of the mean per-replica loss.
    """

    def __init__(self, epsilon: float = DEFAULT_EPSILON, name: str = "ccc_loss"):
        if not epsilon > 0:
            raise ValueError(f"CCCLoss: epsilon must be > 0. Received: epsilon={epsilon}")
        super().__init__(name=name, reduction="none")
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        return 1.0 - ccc(y_true, y_pred, epsilon=self.epsilon)

    def __call__(self, y_true, y_pred, sample_weight=None):
        keras_mask = getattr(y_pred, "_keras_mask", None)
        with tf.name_scope(self.name):
            weights = sample_weight
            if keras_mask is not None:
                m = tf.cast(keras_mask, tf.float32)
                weights = m if weights is None else m * broadcast_weights(weights, m)
            loss = 1.0 - ccc(y_true, y_pred, weights, epsilon=self.epsilon)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            if replicas > 1:
                loss = loss / tf.cast(replicas, loss.dtype)
            return loss

    def get_config(self):
        return {"name": self.name, "epsilon": self.epsilon}
