"""Evaluation metrics (docs/design.md §1, §7): CCC, Pearson correlation and RMSE.

Two forms of each, both with population (divide-by-n) statistics:

- NumPy functions ``ccc_np``, ``pearson_np``, ``rmse_np`` for evaluation reports on whole
  partitions and single recordings (float64).
- Streaming Keras metrics ``ConcordanceCorrelation``, ``PearsonCorrelation``,
  ``RootMeanSquaredError`` whose ``result()`` is the value over *all* frames seen since the last
  ``reset_state()``, i.e. the whole-partition value however the partition was batched, not a mean
  of per-batch values. ``sample_weight`` (the padding mask, ``(batch, time)``) weights every frame
  inside the statistics; weight 0 removes a frame.

The streaming state is the weighted count ``n``, the two means, the two sums of squared deviations
(``M2``) and the co-moment ``C = Σ w (x − x̄)(y − ȳ)``, held in float64. Each batch's own moments are
computed two-pass (centred on the batch mean) and merged with the parallel algorithm of Chan, Golub
and LeVeque (1979):

    n = na + nb,   δx = x̄b − x̄a,   x̄ = x̄a + δx·nb/n,
    M2x = M2x,a + M2x,b + δx²·na·nb/n,   C = Ca + Cb + δx·δy·na·nb/n.

No raw sums of squares are accumulated, so values with a large offset and a tiny spread (1e4 ±
1e-3) keep their precision. An undefined value (no frames; zero denominator, e.g. Pearson of a
constant prediction) is NaN, in both forms, as in scipy and audmetric.

Under a multi-replica ``tf.distribute`` strategy each replica streams its own frames and
``result()`` pools the replicas' moments exactly (all-reduce inside ``strategy.run``, where Keras
computes results, or the replicas' local values outside it), so the value is still the one over
every frame seen, not Keras' usual mean of per-replica results.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from emotion_e2e.losses import broadcast_weights

# ---------------------------------------------------------------------------------------------
# NumPy (float64) reference functions.


def _as_pair(x, y, fn):
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"{fn}: x and y must have the same number of values. Received: {x.size} and {y.size}")
    return x, y


def ccc_np(x, y) -> float:
    """Concordance correlation coefficient of all values of ``x`` and ``y`` (any shapes, same size).

    ``2·cov / (var_x + var_y + (x̄ − ȳ)²)``, population statistics, float64. NaN if empty or if the
    denominator is 0 (both constant and equal).
    """
    x, y = _as_pair(x, y, "ccc_np")
    if x.size == 0:
        return float("nan")
    mx, my = x.mean(), y.mean()
    dx, dy = x - mx, y - my
    denominator = np.mean(dx * dx) + np.mean(dy * dy) + (mx - my) ** 2
    return float(2.0 * np.mean(dx * dy) / denominator) if denominator > 0 else float("nan")


def pearson_np(x, y) -> float:
    """Pearson correlation of all values of ``x`` and ``y``; NaN if empty or either is constant."""
    x, y = _as_pair(x, y, "pearson_np")
    if x.size == 0:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denominator = np.sqrt(np.sum(dx * dx) * np.sum(dy * dy))
    return float(np.sum(dx * dy) / denominator) if denominator > 0 else float("nan")


def rmse_np(x, y) -> float:
    """Root mean squared error of all values of ``x`` and ``y``; NaN if empty."""
    x, y = _as_pair(x, y, "rmse_np")
    if x.size == 0:
        return float("nan")
    return float(np.sqrt(np.mean((x - y) ** 2)))


# ---------------------------------------------------------------------------------------------
# Streaming Keras metrics.


class _PairedMoments(keras.metrics.Metric):
    """Streaming weighted count, means, M2s, co-moment and squared error of (y_true, y_pred)."""

    _STATES = ("count", "mean_true", "mean_pred", "m2_true", "m2_pred", "comoment", "sq_error")

    def __init__(self, name: str):
        super().__init__(name=name, dtype="float64")
        for state in self._STATES:
            # Per replica under tf.distribute (sync on read); ``_pooled`` merges the replicas, the
            # declared "sum" aggregation is only used by Keras to reset them to zero.
            setattr(self, "_" + state, self.add_variable(shape=(), initializer="zeros", dtype="float64",
                                                         name=state))

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch: ``y_true``, ``y_pred`` of any (equal-size) shape, e.g. ``(batch, time)``;
        ``sample_weight`` broadcastable to ``y_pred`` (padding mask ``(batch, time)`` or ``(batch,)``)."""
        y = tf.cast(tf.convert_to_tensor(y_pred), tf.float64)
        w = tf.ones_like(y) if sample_weight is None else broadcast_weights(sample_weight, y)
        x = tf.reshape(tf.cast(tf.convert_to_tensor(y_true), tf.float64), [-1])
        y, w = tf.reshape(y, [-1]), tf.reshape(w, [-1])

        # The batch's own moments, two-pass.
        nb = tf.reduce_sum(w)
        mxb = tf.math.divide_no_nan(tf.reduce_sum(w * x), nb)
        myb = tf.math.divide_no_nan(tf.reduce_sum(w * y), nb)
        dx, dy = x - mxb, y - myb
        m2xb = tf.reduce_sum(w * dx * dx)
        m2yb = tf.reduce_sum(w * dy * dy)
        cb = tf.reduce_sum(w * dx * dy)
        seb = tf.reduce_sum(w * tf.square(x - y))

        # Chan et al. merge with the state so far (divide_no_nan: an empty state or batch is a no-op).
        na = self._count.value
        n = na + nb
        delta_x = mxb - self._mean_true.value
        delta_y = myb - self._mean_pred.value
        frac_b = tf.math.divide_no_nan(nb, n)
        cross = tf.math.divide_no_nan(na * nb, n)
        self._mean_true.assign(self._mean_true.value + delta_x * frac_b)
        self._mean_pred.assign(self._mean_pred.value + delta_y * frac_b)
        self._m2_true.assign(self._m2_true.value + m2xb + delta_x * delta_x * cross)
        self._m2_pred.assign(self._m2_pred.value + m2yb + delta_y * delta_y * cross)
        self._comoment.assign(self._comoment.value + cb + delta_x * delta_y * cross)
        self._sq_error.assign(self._sq_error.value + seb)
        self._count.assign(n)

    def reset_state(self):
        for state in self._STATES:
            getattr(self, "_" + state).assign(tf.constant(0.0, tf.float64))

    def _pooled(self):
        """The state over all frames seen by all replicas: ``(n, x̄, ȳ, M2x, M2y, C, Σw(x−y)²)``.

        With several replicas (each holding the moments of its own frames) the pooled moments are
        ``n = Σ n_r``, ``x̄ = Σ n_r x̄_r / n``, ``M2x = Σ (M2x_r + n_r (x̄_r − x̄)²)``,
        ``C = Σ (C_r + n_r (x̄_r − x̄)(ȳ_r − ȳ))``: exact, and centred like the Chan merge. Inside
        ``strategy.run`` (where Keras computes results) the sums are all-reduces, so every replica
        returns the same, exact value.
        """
        variables = [getattr(self, "_" + state).value for state in self._STATES]
        if not isinstance(variables[0], tf.distribute.DistributedValues):
            return [tf.convert_to_tensor(v) for v in variables]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:  # inside strategy.run
            local = [tf.convert_to_tensor(v) for v in variables]
            device = variables[0].device  # this replica's; a multi-worker all-reduce needs its tensors placed

            def total(t):
                with tf.device(device):
                    return context.all_reduce(tf.distribute.ReduceOp.SUM, tf.identity(t))
        else:  # outside strategy.run: the replicas' own values, not their aggregated read
            strategy = variables[0].distribute_strategy
            local = [tf.stack([tf.convert_to_tensor(c) for c in strategy.experimental_local_results(v)])
                     for v in variables]

            def total(t):
                return tf.reduce_sum(t, axis=0)

        n_r, mx_r, my_r, m2x_r, m2y_r, c_r, se_r = local
        n = total(n_r)
        mx = tf.math.divide_no_nan(total(n_r * mx_r), n)
        my = tf.math.divide_no_nan(total(n_r * my_r), n)
        return [n, mx, my,
                total(m2x_r + n_r * tf.square(mx_r - mx)),
                total(m2y_r + n_r * tf.square(my_r - my)),
                total(c_r + n_r * (mx_r - mx) * (my_r - my)),
                total(se_r)]

    def get_config(self):
        return {"name": self.name}

    @staticmethod
    def _ratio(numerator, denominator):
        """numerator / denominator, NaN where the denominator is not positive."""
        safe = tf.where(denominator > 0, denominator, tf.ones_like(denominator))
        return tf.where(denominator > 0, numerator / safe, tf.constant(np.nan, tf.float64))


@keras.saving.register_keras_serializable(package="emotion_e2e")
class ConcordanceCorrelation(_PairedMoments):
    """Streaming CCC over all frames seen: ``2·C / (M2x + M2y + n·(x̄ − ȳ)²)``."""

    def __init__(self, name: str = "ccc"):
        super().__init__(name=name)

    def result(self):
        n, mx, my, m2x, m2y, c, _ = self._pooled()
        return self._ratio(2.0 * c, m2x + m2y + n * tf.square(mx - my))


@keras.saving.register_keras_serializable(package="emotion_e2e")
class PearsonCorrelation(_PairedMoments):
    """Streaming Pearson correlation over all frames seen: ``C / sqrt(M2x·M2y)``."""

    def __init__(self, name: str = "pearson"):
        super().__init__(name=name)

    def result(self):
        _, _, _, m2x, m2y, c, _ = self._pooled()
        return self._ratio(c, tf.sqrt(m2x * m2y))


@keras.saving.register_keras_serializable(package="emotion_e2e")
class RootMeanSquaredError(_PairedMoments):
    """Streaming RMSE over all frames seen: ``sqrt(Σ w (x − y)² / Σ w)``."""

    def __init__(self, name: str = "rmse"):
        super().__init__(name=name)

    def result(self):
        n, *_, se = self._pooled()
        return tf.sqrt(self._ratio(se, n))
