"""The recurrent part: stacked LSTMs over the sequence of fused per-frame features.

``PeepholeLSTM`` is TF1's ``tf.nn.rnn_cell.LSTMCell(use_peepholes=True, cell_clip=...,
forget_bias=...)`` (the authors' cell) run over a sequence. With ``z = x·W + h_prev·U + b``
split into the four gates in TF1's order ``i, j, f, o`` (input gate, candidate, forget
gate, output gate):

    i = σ(z_i + w_ci ⊙ c_prev)
    f = σ(z_f + forget_bias + w_cf ⊙ c_prev)
    c = clip(f ⊙ c_prev + i ⊙ tanh(z_j), ±cell_clip)
    o = σ(z_o + w_co ⊙ c)
    h = o ⊙ tanh(c)

The kernels are stored Keras-style (``kernel`` for x, ``recurrent_kernel`` for h, each
with the four gates side by side in the order i, j, f, o); initialisation follows Keras'
LSTM (Glorot-uniform / orthogonal / zeros) and the peepholes are Glorot-uniform; TF 0.12's
LSTMCell, which the authors' code ran on, drew the joint [x, h] matrix and the peepholes from its
variable scope's default, uniform_unit_scaling (docs/design.md §9).

The layer computes the input projection ``x·W + b`` of all time steps in one matmul before
the recurrence (as cuDNN does): the loop only does ``h·U`` and the gates, and the gradient
of ``W`` is one matmul too, not one outer product per step. The recurrence's gradient is
written by hand (``peephole_recurrence``), and under mixed precision the recurrence runs in
float32 on the float32 ``recurrent_kernel`` and peepholes (docs/design.md §13).
``PeepholeLSTMCell`` is the same step as a Keras RNN cell: models saved before
``PeepholeLSTM`` hold ``RNN(PeepholeLSTMCell)`` and still load and compute the same.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from emotion_e2e.config import RecurrentConfig
from emotion_e2e.models.layers import PACKAGE

GATES = 4  # i, j, f, o (TF1's order)
PEEPHOLES = ("w_ci", "w_cf", "w_co")  # diagonal weights of c_prev on i and f, of c on o


def peephole_update(z, c_prev, w_ci, w_cf, w_co, forget_bias: float, cell_clip: float | None):
    """One peephole LSTM step from the gate pre-activations ``z = x·W + h_prev·U + b``
    ``(batch, 4·units)`` and the previous cell state ``c_prev`` ``(batch, units)``:
    returns ``h, c``, each ``(batch, units)``. The one place the step is written
    (``PeepholeLSTMCell`` calls it, ``PeepholeLSTM``'s loop its ``_peephole_step``)."""
    h, c, _ = _peephole_step(z, c_prev, w_ci, w_cf, w_co, forget_bias, cell_clip)
    return h, c


def _peephole_step(z, c_prev, w_ci, w_cf, w_co, forget_bias: float, cell_clip: float | None):
    """``peephole_update`` that also returns the cell state before clipping: ``h, c, c_unclipped``."""
    z_i, z_j, z_f, z_o = ops.split(z, GATES, axis=-1)
    i = ops.sigmoid(z_i + w_ci * c_prev)
    if forget_bias:
        z_f = z_f + forget_bias
    f = ops.sigmoid(z_f + w_cf * c_prev)
    c_unclipped = f * c_prev + i * ops.tanh(z_j)
    c = c_unclipped if cell_clip is None else ops.clip(c_unclipped, -cell_clip, cell_clip)
    o = ops.sigmoid(z_o + w_co * c)  # peeks at the new cell state, as TF1 does
    return o * ops.tanh(c), c, c_unclipped


def peephole_recurrence(z_x, h_0, c_0, u, w_ci, w_cf, w_co, cell_clip: float | None):
    """The peephole LSTM over a time-major sequence of input projections ``z_x = x·W + b``
    ``(time, batch, 4·units)``, the forget bias already added to its ``f`` quarter, from
    ``h_0, c_0`` ``(batch, units)``: returns ``h`` of every step ``(time, batch, units)`` and
    the last ``h, c``, all in ``z_x``'s dtype.

    Its gradient is written by hand (docs/design.md §13): autodiff through the loop would
    save and reload a dozen tensors per step and run ~60 small ops per step backwards. Here
    the forward loop keeps only ``h`` and the unclipped ``c`` of each step; the backward pass
    recomputes the gates of all steps at once from them, runs one reverse loop of a handful of
    ops per step for the gate pre-activation gradients ``dz``, and gets ``dU`` as one matmul
    over all steps and the peephole gradients as sums. ``dz`` is the gradient of ``z_x``, so
    ``W`` and ``b`` get theirs from autodiff of the projection. Where ``c`` was clipped the
    gradient stops, as ``clip``'s does (it passes where ``-cell_clip <= c <= cell_clip``).
    """

    def clip(c):
        return c if cell_clip is None else tf.clip_by_value(c, -cell_clip, cell_clip)

    @tf.custom_gradient
    def recurrence(z_x, h_0, c_0, u, w_ci, w_cf, w_co):
        steps, units = tf.shape(z_x)[0], u.shape[0]

        def step(t, h, c, hs, cs):
            h, c, c_unclipped = _peephole_step(z_x[t] + tf.matmul(h, u), c, w_ci, w_cf, w_co, 0.0, cell_clip)
            return t + 1, h, c, hs.write(t, h), cs.write(t, c_unclipped)

        # Neither loop is differentiated, so neither needs maximum_iterations for XLA.
        arrays = [tf.TensorArray(z_x.dtype, size=steps, element_shape=h_0.shape) for _ in range(2)]
        _, h_last, c_last, hs, cs = tf.while_loop(lambda t, *_: t < steps, step, (0, h_0, c_0, *arrays))
        hs, c_unclipped = hs.stack(), cs.stack()

        def grad(d_hs, d_h_last, d_c_last):
            d_hs = _zeros_if_none(d_hs, hs)
            d_h_last, d_c_last = _zeros_if_none(d_h_last, h_0), _zeros_if_none(d_c_last, c_0)
            # The gates of every step at once, from the states the forward loop kept.
            c = clip(c_unclipped)
            h_prev = tf.concat([h_0[None], hs[:-1]], axis=0)
            c_prev = tf.concat([c_0[None], c[:-1]], axis=0)
            h_flat = tf.reshape(h_prev, (-1, units))
            z = z_x + tf.reshape(tf.matmul(h_flat, u), tf.shape(z_x))
            z_i, z_j, z_f, z_o = tf.split(z, GATES, axis=-1)
            i, f = tf.sigmoid(z_i + w_ci * c_prev), tf.sigmoid(z_f + w_cf * c_prev)
            g, o, tanh_c = tf.tanh(z_j), tf.sigmoid(z_o + w_co * c), tf.tanh(c)
            # The step's derivatives that do not depend on the incoming gradient, all steps at once:
            # dz_o = dh·d_o; dc_unclipped = (dc + dh·d_c)·inside; dz_{i,j,f} = dc_unclipped·d_{i,j,f};
            # dc_prev = dc_unclipped·d_prev (d_prev times the previous step's inside, where it was clipped).
            d_o = tanh_c * o * (1 - o)
            d_c = o * (1 - tanh_c * tanh_c) + d_o * w_co
            d_i, d_j, d_f = g * i * (1 - i), i * (1 - g * g), c_prev * f * (1 - f)
            d_prev = f + d_i * w_ci + d_f * w_cf
            if cell_clip is not None:
                inside = tf.cast(tf.abs(c_unclipped) <= cell_clip, z_x.dtype)
                d_c *= inside
                d_prev *= tf.concat([tf.ones_like(inside[:1]), inside[:-1]], axis=0)
                d_c_last *= inside[-1]
            d_gates = tf.concat([d_i, d_j, d_f, d_o], axis=-1)
            u_t = tf.transpose(u)

            def back(t, dh_next, dc, dzs):
                dh = d_hs[t] + dh_next
                dc = dc + dh * d_c[t]
                dz = tf.concat([dc, dc, dc, dh], axis=-1) * d_gates[t]
                return t - 1, tf.matmul(dz, u_t), dc * d_prev[t], dzs.write(t, dz)

            dzs = tf.TensorArray(z_x.dtype, size=steps, element_shape=tf.TensorShape([h_0.shape[0], GATES * units]))
            # The last step's dh is its output's gradient plus d_h_last: d_h_last starts the carry.
            _, d_h_0, d_c_0, dzs = tf.while_loop(lambda t, *_: t >= 0, back, (steps - 1, d_h_last, d_c_last, dzs))
            dz = dzs.stack()
            dz_i, _, dz_f, dz_o = tf.split(dz, GATES, axis=-1)
            d_u = tf.matmul(h_flat, tf.reshape(dz, (-1, GATES * units)), transpose_a=True)
            return (dz, d_h_0, d_c_0, d_u, tf.reduce_sum(dz_i * c_prev, (0, 1)),
                    tf.reduce_sum(dz_f * c_prev, (0, 1)), tf.reduce_sum(dz_o * c, (0, 1)))

        return (hs, h_last, c_last), grad

    return recurrence(z_x, h_0, c_0, u, w_ci, w_cf, w_co)


def _zeros_if_none(gradient, like):
    return tf.zeros_like(like) if gradient is None else gradient


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeepholeLSTMCell(keras.layers.Layer):
    """LSTM cell with diagonal peephole connections, cell clipping and a constant forget bias
    (the step of ``PeepholeLSTM``, for models saved with ``RNN(PeepholeLSTMCell)``).

    Step: ``inputs (batch, input_dim)``, ``states [h (batch, units), c (batch, units)]`` →
    ``h (batch, units)``, ``[h, c]``. Use inside ``keras.layers.RNN``.

    Args:
        units: size of ``h`` and ``c``.
        cell_clip: ``c`` is clipped to ``[-cell_clip, cell_clip]`` after every update;
            ``None`` for no clipping.
        forget_bias: constant added to the forget gate's pre-activation (not a weight).
    """

    def __init__(self, units: int, cell_clip: float | None = None, forget_bias: float = 1.0,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 peephole_initializer="glorot_uniform", bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        _configure(self, units, cell_clip, forget_bias, kernel_initializer, recurrent_initializer,
                   peephole_initializer, bias_initializer)
        self.state_size = [self.units, self.units]  # h, c
        self.output_size = self.units

    def build(self, input_shape):
        _add_weights(self, input_shape[-1])

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel) + self.bias
        h, c = peephole_update(z, c_prev, self.w_ci, self.w_cf, self.w_co, self.forget_bias, self.cell_clip)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), **_config(self)}


def _configure(layer, units: int, cell_clip, forget_bias: float, kernel_initializer, recurrent_initializer,
               peephole_initializer, bias_initializer):
    """Checks and sets the arguments ``PeepholeLSTM`` and ``PeepholeLSTMCell`` share."""
    if units <= 0 or (cell_clip is not None and cell_clip <= 0):
        raise ValueError(f"A peephole LSTM needs units > 0 and cell_clip > 0 or None. "
                         f"Received: units={units}, cell_clip={cell_clip}")
    layer.units = int(units)
    layer.cell_clip = None if cell_clip is None else float(cell_clip)
    layer.forget_bias = float(forget_bias)
    layer.kernel_initializer = keras.initializers.get(kernel_initializer)
    layer.recurrent_initializer = keras.initializers.get(recurrent_initializer)
    layer.peephole_initializer = keras.initializers.get(peephole_initializer)
    layer.bias_initializer = keras.initializers.get(bias_initializer)


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeepholeLSTM(keras.layers.Layer):
    """``RNN(PeepholeLSTMCell(...), return_sequences=True)``, the input projection of all time
    steps computed in one matmul: ``(batch, time, input_dim)`` → ``(batch, time, units)``.
    The same weights (same names, order and initialisers) and the same outputs up to rounding.

    Under mixed precision the projection runs in the compute dtype and the recurrence in the
    weights' (float32); the outputs are in the compute dtype.

    Like Keras' RNN layers it can start from ``initial_state=[h, c]`` (each ``(batch, units)``;
    zeros when omitted) and, with ``return_state=True``, also return the state after the last
    frame: ``[sequence, h, c]``. Feeding that state into the call on the next chunk of a
    sequence gives the outputs of one call on the whole sequence
    (``inference.with_recurrent_state``).
    """

    def __init__(self, units: int, cell_clip: float | None = None, forget_bias: float = 1.0,
                 return_state: bool = False, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", peephole_initializer="glorot_uniform",
                 bias_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        _configure(self, units, cell_clip, forget_bias, kernel_initializer, recurrent_initializer,
                   peephole_initializer, bias_initializer)
        self.return_state = bool(return_state)

    def build(self, input_shape):
        _add_weights(self, input_shape[-1], autocast_recurrent=False)

    def call(self, inputs, initial_state=None, mask=None, training=None):  # noqa: ARG002 - RNN's signature
        z_x = ops.matmul(inputs, self.kernel) + self.bias  # (batch, time, 4·units)
        # The recurrence runs in the weights' dtype (float32 under mixed precision: faster on a CPU
        # for these small per-step ops than bfloat16, and without rounding the carried state).
        dtype = self.recurrent_kernel.dtype
        forget_bias = np.repeat(np.float32([0, 0, self.forget_bias, 0]), self.units)  # on f of i, j, f, o
        z_x = ops.cast(z_x, dtype) + ops.convert_to_tensor(forget_bias, dtype)
        if initial_state is None:
            h_0 = c_0 = ops.zeros_like(z_x[:, 0, : self.units])
        else:
            h_0, c_0 = (ops.cast(s, dtype) for s in initial_state)
        weights = (self.recurrent_kernel, self.w_ci, self.w_cf, self.w_co)
        sequence, h, c = peephole_recurrence(ops.transpose(z_x, (1, 0, 2)), h_0, c_0,
                                             *(tf.convert_to_tensor(w) for w in weights), self.cell_clip)
        sequence, h, c = (ops.cast(t, self.compute_dtype) for t in (ops.transpose(sequence, (1, 0, 2)), h, c))
        if not self.return_state:
            return sequence
        return [sequence, h, c]

    def compute_output_shape(self, input_shape):
        sequence = tuple(input_shape[:-1]) + (self.units,)
        if not self.return_state:
            return sequence
        state = (input_shape[0], self.units)
        return [sequence, state, state]

    def get_config(self):
        return {**super().get_config(), **_config(self), "return_state": self.return_state}


def _add_weights(layer, input_dim: int, autocast_recurrent: bool = True):
    """The weights of ``PeepholeLSTM`` and ``PeepholeLSTMCell``, in the order both keep.
    ``autocast_recurrent=False``: ``recurrent_kernel`` and the peepholes are read in their own
    dtype under mixed precision (not cast to the compute dtype)."""
    n = GATES * layer.units
    layer.kernel = layer.add_weight(shape=(input_dim, n), name="kernel", initializer=layer.kernel_initializer)
    layer.recurrent_kernel = layer.add_weight(shape=(layer.units, n), name="recurrent_kernel",
                                              initializer=layer.recurrent_initializer, autocast=autocast_recurrent)
    layer.bias = layer.add_weight(shape=(n,), name="bias", initializer=layer.bias_initializer)
    for name in PEEPHOLES:
        setattr(layer, name, layer.add_weight(shape=(layer.units,), name=name, initializer=layer.peephole_initializer,
                                              autocast=autocast_recurrent))


def _config(layer) -> dict:
    return {
        "units": layer.units,
        "cell_clip": layer.cell_clip,
        "forget_bias": layer.forget_bias,
        "kernel_initializer": keras.initializers.serialize(layer.kernel_initializer),
        "recurrent_initializer": keras.initializers.serialize(layer.recurrent_initializer),
        "peephole_initializer": keras.initializers.serialize(layer.peephole_initializer),
        "bias_initializer": keras.initializers.serialize(layer.bias_initializer),
    }


def apply_recurrent(x, cfg: RecurrentConfig, name: str = "lstm"):
    """``cfg.layers`` stacked LSTMs: ``(batch, time, features)`` → ``(batch, time, cfg.units)``
    (``x`` unchanged when ``cfg.layers == 0``). Layers are named ``{name}_1``, ``{name}_2``, …

    ``cfg.cell == 'peephole'``: ``PeepholeLSTM`` with ``cfg.cell_clip`` and
    ``cfg.forget_bias``. ``'standard'``: ``keras.layers.LSTM`` (cuDNN-eligible), which has
    no peepholes and no clipping and starts its forget bias at 1 (``unit_forget_bias``),
    so ``cell_clip`` and ``forget_bias`` do not apply.
    """
    for k in range(1, cfg.layers + 1):
        if cfg.cell == "peephole":
            x = PeepholeLSTM(cfg.units, cell_clip=cfg.cell_clip, forget_bias=cfg.forget_bias, name=f"{name}_{k}")(x)
        else:
            x = keras.layers.LSTM(cfg.units, return_sequences=True, unit_forget_bias=True, name=f"{name}_{k}")(x)
    return x
