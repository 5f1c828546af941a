"""The recurrent part: stacked LSTMs over the sequence of fused per-frame features.

``PeepholeLSTMCell`` is TF1's ``tf.nn.rnn_cell.LSTMCell(use_peepholes=True,
cell_clip=..., forget_bias=...)`` (the authors' cell) as a Keras 3 RNN cell. With
``z = x·W + h_prev·U + b`` split into the four gates in TF1's order ``i, j, f, o``
(input gate, candidate, forget gate, output gate):

    i = σ(z_i + w_ci ⊙ c_prev)
    f = σ(z_f + forget_bias + w_cf ⊙ c_prev)
    c = clip(f ⊙ c_prev + i ⊙ tanh(z_j), ±cell_clip)
    o = σ(z_o + w_co ⊙ c)
    h = o ⊙ tanh(c)

The kernels are stored Keras-style (``kernel`` for x, ``recurrent_kernel`` for h, each
with the four gates side by side in the order i, j, f, o); initialisation follows Keras'
LSTM (Glorot-uniform / orthogonal / zeros), peepholes Glorot-uniform as TF1's default.
"""

from __future__ import annotations

import keras
from keras import ops

from emotion_e2e.config import RecurrentConfig
from emotion_e2e.models.layers import PACKAGE

GATES = 4  # i, j, f, o (TF1's order)


def peephole_update(z, c_prev, w_ci, w_cf, w_co, forget_bias: float, cell_clip: float | None):
    """One peephole LSTM step from the gate pre-activations ``z = x·W + h_prev·U + b``
    ``(batch, 4·units)`` and the previous cell state ``c_prev`` ``(batch, units)``:
    returns ``h, c``, each ``(batch, units)``. The one place the step is written
    (``PeepholeLSTMCell`` and the inference-time ``ProjectedPeepholeLSTM`` both call it)."""
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
    """LSTM cell with diagonal peephole connections, cell clipping and a constant forget bias.

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
        if units <= 0 or (cell_clip is not None and cell_clip <= 0):
            raise ValueError(f"PeepholeLSTMCell needs units > 0 and cell_clip > 0 or None. "
                             f"Received: units={units}, cell_clip={cell_clip}")
        self.units = int(units)
        self.cell_clip = None if cell_clip is None else float(cell_clip)
        self.forget_bias = float(forget_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.peephole_initializer = keras.initializers.get(peephole_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.state_size = [self.units, self.units]  # h, c
        self.output_size = self.units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(shape=(input_dim, GATES * self.units), name="kernel",
                                      initializer=self.kernel_initializer)
        self.recurrent_kernel = self.add_weight(shape=(self.units, GATES * self.units), name="recurrent_kernel",
                                                initializer=self.recurrent_initializer)
        self.bias = self.add_weight(shape=(GATES * self.units,), name="bias", initializer=self.bias_initializer)
        self.w_ci = self.add_weight(shape=(self.units,), name="w_ci", initializer=self.peephole_initializer)
        self.w_cf = self.add_weight(shape=(self.units,), name="w_cf", initializer=self.peephole_initializer)
        self.w_co = self.add_weight(shape=(self.units,), name="w_co", initializer=self.peephole_initializer)

    def call(self, inputs, states, training=False):
        h_prev, c_prev = states
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_prev, self.recurrent_kernel) + self.bias
        h, c = peephole_update(z, c_prev, self.w_ci, self.w_cf, self.w_co, self.forget_bias, self.cell_clip)
        return h, [h, c]

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "cell_clip": self.cell_clip,
            "forget_bias": self.forget_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "peephole_initializer": keras.initializers.serialize(self.peephole_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


def apply_recurrent(x, cfg: RecurrentConfig, name: str = "lstm"):
    """``cfg.layers`` stacked LSTMs: ``(batch, time, features)`` → ``(batch, time, cfg.units)``
    (``x`` unchanged when ``cfg.layers == 0``). Layers are named ``{name}_1``, ``{name}_2``, …

    ``cfg.cell == 'peephole'``: ``RNN(PeepholeLSTMCell)`` with ``cfg.cell_clip`` and
    ``cfg.forget_bias``. ``'standard'``: ``keras.layers.LSTM`` (cuDNN-eligible), which has
    no peepholes and no clipping and starts its forget bias at 1 (``unit_forget_bias``),
    so ``cell_clip`` and ``forget_bias`` do not apply.
    """
    for k in range(1, cfg.layers + 1):
        if cfg.cell == "peephole":
            cell = PeepholeLSTMCell(cfg.units, cell_clip=cfg.cell_clip, forget_bias=cfg.forget_bias,
                                    name=f"{name}_{k}_cell")
            x = keras.layers.RNN(cell, return_sequences=True, name=f"{name}_{k}")(x)
        else:
            x = keras.layers.LSTM(cfg.units, return_sequences=True, unit_forget_bias=True, name=f"{name}_{k}")(x)
    return x
