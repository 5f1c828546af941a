"""PeepholeLSTM and PeepholeLSTMCell against a NumPy step-by-step reference (TF1 LSTMCell
semantics), and against each other, gradients included; the stack."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e.config import RecurrentConfig
from emotion_e2e.models import PeepholeLSTM, PeepholeLSTMCell, apply_recurrent

UNITS, INPUT_DIM, BATCH, STEPS = 4, 3, 2, 6


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference(x, kernel, recurrent, bias, w_ci, w_cf, w_co, cell_clip, forget_bias):
    """TF1 LSTMCell(use_peepholes=True): gates i, j, f, o. Returns h sequence, last c, max |c| before clip."""
    h = np.zeros((x.shape[0], UNITS))
    c = np.zeros((x.shape[0], UNITS))
    hs, peak = [], 0.0
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        z_i, z_j, z_f, z_o = np.split(z, 4, axis=-1)
        i = sigmoid(z_i + w_ci * c)
        f = sigmoid(z_f + forget_bias + w_cf * c)
        c = f * c + i * np.tanh(z_j)
        peak = max(peak, float(np.abs(c).max()))
        if cell_clip is not None:
            c = np.clip(c, -cell_clip, cell_clip)
        o = sigmoid(z_o + w_co * c)
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), c, peak


WEIGHTS = ["kernel", "recurrent_kernel", "bias", "w_ci", "w_cf", "w_co"]


def peephole_layer(kind: str, cell_clip, forget_bias=1.0, units=UNITS):
    """``(layer, holder of the weights)``: ``PeepholeLSTM`` or ``RNN(PeepholeLSTMCell)``,
    both returning ``[sequence, h, c]``, built for ``INPUT_DIM`` inputs."""
    if kind == "layer":
        layer = PeepholeLSTM(units, cell_clip=cell_clip, forget_bias=forget_bias, return_state=True)
        holder = layer
    else:
        holder = PeepholeLSTMCell(units, cell_clip=cell_clip, forget_bias=forget_bias)
        layer = keras.layers.RNN(holder, return_sequences=True, return_state=True)
    layer.build((None, None, INPUT_DIM))
    return layer, holder


@pytest.mark.parametrize("kind", ["layer", "cell"])
@pytest.mark.parametrize("cell_clip", [0.5, None])
def test_matches_numpy_reference(kind, cell_clip):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, STEPS, INPUT_DIM)).astype("float32")
    rnn, cell = peephole_layer(kind, cell_clip)
    names = WEIGHTS
    assert [w.name for w in rnn.weights] == names
    values = {n: rng.normal(scale=1.5, size=tuple(getattr(cell, n).shape)).astype("float32") for n in names}
    for n in names:
        getattr(cell, n).assign(values[n])
    h_seq, h_last, c_last = (np.asarray(t) for t in rnn(x))
    ref_h, ref_c, peak = reference(x.astype("float64"), *(values[n] for n in names), cell_clip, 1.0)
    assert peak > 0.5  # the clip value of the clipped case is really reached
    np.testing.assert_allclose(h_seq, ref_h, atol=1e-5)
    np.testing.assert_allclose(h_last, ref_h[:, -1], atol=1e-5)
    np.testing.assert_allclose(c_last, ref_c, atol=1e-5)
    if cell_clip is not None:
        assert np.abs(c_last).max() <= cell_clip + 1e-6


def test_layer_and_cell_have_the_same_gradients_and_initial_state_handling():
    """What training differentiates: the layer's gradients equal the RNN's for every weight
    and for the input, from a given state."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(BATCH, STEPS, INPUT_DIM)), tf.float32)
    state = [tf.constant(rng.normal(size=(BATCH, UNITS)), tf.float32) for _ in range(2)]
    (layer, _), (rnn, _) = peephole_layer("layer", 1.0), peephole_layer("cell", 1.0)
    rnn.set_weights([rng.normal(scale=0.7, size=w.shape) for w in rnn.weights])
    layer.set_weights(rnn.get_weights())
    results = []
    for model in (layer, rnn):
        with tf.GradientTape() as tape:
            tape.watch(x)
            sequence, h, c = model(x, initial_state=state)
            loss = tf.reduce_sum(sequence * tf.sin(sequence)) + tf.reduce_sum(h * c)
        results.append([loss, *tape.gradient(loss, [x, *model.trainable_weights])])
    for name, got, want in zip(["loss", "input", *WEIGHTS], *results):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5, err_msg=name)


def test_forget_bias_is_a_constant_not_a_weight():
    cell = PeepholeLSTMCell(UNITS, forget_bias=3.0)
    cell.build((None, INPUT_DIM))
    assert [w.name for w in cell.weights] == ["kernel", "recurrent_kernel", "bias", "w_ci", "w_cf", "w_co"]
    np.testing.assert_array_equal(cell.bias, np.zeros(4 * UNITS))
    x = np.zeros((1, INPUT_DIM), "float32")
    c_prev = np.full((1, UNITS), 2.0, "float32")
    for w in (cell.kernel, cell.recurrent_kernel, cell.w_ci, cell.w_cf, cell.w_co):
        w.assign(np.zeros(w.shape))
    _, (_, c) = cell(x, [np.zeros((1, UNITS), "float32"), c_prev])
    # i = σ(0), f = σ(3), candidate tanh(0) = 0 → c = σ(3)·c_prev
    np.testing.assert_allclose(c, sigmoid(3.0) * c_prev, rtol=1e-6)


def test_layer_get_config_round_trip():
    layer = PeepholeLSTM(7, cell_clip=100.0, forget_bias=0.5, return_state=True, peephole_initializer="zeros",
                         name="l")
    config = layer.get_config()
    clone = PeepholeLSTM.from_config(config)
    assert clone.get_config() == config
    assert (clone.units, clone.cell_clip, clone.forget_bias, clone.return_state) == (7, 100.0, 0.5, True)
    assert keras.saving.get_registered_name(PeepholeLSTM) == "emotion_e2e>PeepholeLSTM"
    clone.build((None, None, 3))
    np.testing.assert_array_equal(clone.w_ci, np.zeros(7))


def test_get_config_round_trip():
    cell = PeepholeLSTMCell(7, cell_clip=100.0, forget_bias=0.5, peephole_initializer="zeros", name="c")
    config = cell.get_config()
    clone = PeepholeLSTMCell.from_config(config)
    assert clone.get_config() == config
    assert (clone.units, clone.cell_clip, clone.forget_bias) == (7, 100.0, 0.5)
    assert keras.saving.get_registered_name(PeepholeLSTMCell) == "emotion_e2e>PeepholeLSTMCell"
    rnn = keras.layers.deserialize(keras.layers.serialize(keras.layers.RNN(cell, return_sequences=True)))
    assert isinstance(rnn.cell, PeepholeLSTMCell) and rnn.cell.get_config() == config


@pytest.mark.parametrize("kind", [PeepholeLSTM, PeepholeLSTMCell])
def test_bad_arguments_say_what_was_received(kind):
    with pytest.raises(ValueError, match="cell_clip=-1"):
        kind(4, cell_clip=-1)
    with pytest.raises(ValueError, match="units=0"):
        kind(0)


@pytest.mark.parametrize("cell, layer_type", [("peephole", PeepholeLSTM), ("standard", keras.layers.LSTM)])
def test_apply_recurrent_stack(cell, layer_type):
    cfg = RecurrentConfig(layers=2, units=5, cell=cell, cell_clip=3.0, forget_bias=1.0)
    x = keras.Input((None, INPUT_DIM))
    model = keras.Model(x, apply_recurrent(x, cfg, name="lstm"))
    assert [layer.name for layer in model.layers[1:]] == ["lstm_1", "lstm_2"]
    assert all(type(layer) is layer_type for layer in model.layers[1:])
    if cell == "peephole":
        assert model.layers[1].cell_clip == 3.0 and model.layers[1].forget_bias == 1.0
    else:
        assert model.layers[1].unit_forget_bias
    assert tuple(model(np.zeros((2, 4, INPUT_DIM), "float32")).shape) == (2, 4, 5)


def test_apply_recurrent_without_layers_is_identity():
    x = keras.Input((None, INPUT_DIM))
    assert apply_recurrent(x, RecurrentConfig(layers=0)) is x
