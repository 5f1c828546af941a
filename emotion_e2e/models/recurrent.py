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
LSTM (Glorot-uniform / orthogonal / zeros), peepholes Glorot-uniform as TF1's default.

The layer computes the input projection ``x·W + b`` of all time steps in one matmul before
the recurrence (as cuDNN does): the loop only does ``h·U`` and the gates, and the gradient
of ``W`` is one matmul too, not one outer product per step (docs/design.md §13).
``PeepholeLSTMCell`` is the same step as a Keras RNN cell: models saved before
``PeepholeLSTM`` hold ``RNN(PeepholeLSTMCell)`` and still load and compute the same.
"""

from __future__ import annotations

import keras
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
    (``PeepholeLSTM`` and ``PeepholeLSTMCell`` both call it)."""
    z_i, z_j, z_f, z_o = ops.split(z, GATES, axis=-1)
    i = ops.sigmoid(z_i + w_ci * c_prev)
    f = ops.sigmoid(z_f + forget_bias + w_cf * c_prev)
    c = f * c_prev + i * ops.tanh(z_j)
    if cell_clip is not None:
        c = ops.clip(c, -cell_clip, cell_clip)
    o = ops.sigmoid(z_o + w_co * c)  # peeks at the new cell state, as TF1 does
    return o * ops.tanh(c), c


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
        _add_weights(self, input_shape[-1])

    def call(self, inputs, initial_state=None, mask=None, training=None):  # noqa: ARG002 - RNN's signature
        z_x = ops.matmul(inputs, self.kernel) + self.bias  # (batch, time, 4·units)
        u, w_ci, w_cf, w_co = self.recurrent_kernel, self.w_ci, self.w_cf, self.w_co  # read (cast) once
        if initial_state is None:
            start = ops.zeros_like(z_x[:, 0, : 2 * self.units])
        else:
            h_0, c_0 = initial_state
            start = ops.concatenate([ops.cast(h_0, z_x.dtype), ops.cast(c_0, z_x.dtype)], axis=-1)

        def step(carry, z_t):  # carry: [h, c] side by side, (batch, 2·units)
            h_prev, c_prev = carry[:, : self.units], carry[:, self.units:]
            h, c = peephole_update(z_t + ops.matmul(h_prev, u), c_prev, w_ci, w_cf, w_co, self.forget_bias,
                                   self.cell_clip)
            return ops.concatenate([h, c], axis=-1)

        # tf.scan bounds its loop by the sequence length, which XLA needs to differentiate it.
        states = tf.scan(step, ops.transpose(z_x, (1, 0, 2)), initializer=start)  # (time, batch, 2·units)
        last = states[-1]
        sequence = ops.transpose(states[:, :, : self.units], (1, 0, 2))
        if not self.return_state:
            return sequence
        return [sequence, last[:, : self.units], last[:, self.units:]]

    def compute_output_shape(self, input_shape):
        sequence = tuple(input_shape[:-1]) + (self.units,)
        if not self.return_state:
            return sequence
        state = (input_shape[0], self.units)
        return [sequence, state, state]

    def get_config(self):
        return {**super().get_config(), **_config(self), "return_state": self.return_state}


def _add_weights(layer, input_dim: int):
    """The weights of ``PeepholeLSTM`` and ``PeepholeLSTMCell``, in the order both keep."""
    n = GATES * layer.units
    layer.kernel = layer.add_weight(shape=(input_dim, n), name="kernel", initializer=layer.kernel_initializer)
    layer.recurrent_kernel = layer.add_weight(shape=(layer.units, n), name="recurrent_kernel",
                                              initializer=layer.recurrent_initializer)
    layer.bias = layer.add_weight(shape=(n,), name="bias", initializer=layer.bias_initializer)
    for name in PEEPHOLES:
        setattr(layer, name, layer.add_weight(shape=(layer.units,), name=name, initializer=layer.peephole_initializer))


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
