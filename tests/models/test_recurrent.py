"""PeepholeLSTM and PeepholeLSTMCell against a NumPy step-by-step reference (TF1 LSTMCell
semantics), and against each other, gradients included (the layer's gradient is written by
hand, the cell's is autodiff of the step); mixed precision, XLA; the stack."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e.config import RecurrentConfig
from emotion_e2e.models import PeepholeLSTM, PeepholeLSTMCell, apply_recurrent

UNITS, INPUT_DIM, BATCH, STEPS = 4, 3, 2, 6


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def reference(x, kernel, recurrent, bias, w_ci, w_cf, w_co, cell_clip, forget_bias, h=None, c=None):
    """TF1 LSTMCell(use_peepholes=True): gates i, j, f, o, from ``h, c`` (zeros by default).
    Returns h sequence, last c, c before clipping of every step ``(batch, time, units)``."""
    h = np.zeros((x.shape[0], UNITS)) if h is None else h
    c = np.zeros((x.shape[0], UNITS)) if c is None else c
    hs, unclipped = [], []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent + bias
        z_i, z_j, z_f, z_o = np.split(z, 4, axis=-1)
        i = sigmoid(z_i + w_ci * c)
        f = sigmoid(z_f + forget_bias + w_cf * c)
        c = f * c + i * np.tanh(z_j)
        unclipped.append(c)
        if cell_clip is not None:
            c = np.clip(c, -cell_clip, cell_clip)
        o = sigmoid(z_o + w_co * c)
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs, 1), c, np.stack(unclipped, 1)


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
    ref_h, ref_c, unclipped = reference(x.astype("float64"), *(values[n] for n in names), cell_clip, 1.0)
    assert np.abs(unclipped).max() > 0.5  # the clip value of the clipped case is really reached
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


CLIP = 0.3  # small enough that some cells of the tests' sequences clip and others do not
OUTPUTS = ["sequence", "h", "c"]


@pytest.fixture(scope="module")
def clipped_pair():
    """``(PeepholeLSTM, RNN(PeepholeLSTMCell), x, [h_0, c_0])``: both return ``[sequence, h, c]``,
    have the same weights and clip at ``CLIP``."""
    rng = np.random.default_rng(2)
    (layer, _), (rnn, _) = peephole_layer("layer", CLIP), peephole_layer("cell", CLIP)
    rnn.set_weights([rng.normal(scale=0.7, size=w.shape) for w in rnn.weights])
    layer.set_weights(rnn.get_weights())
    x = rng.normal(size=(BATCH, STEPS, INPUT_DIM)).astype("float32")
    state = [rng.normal(scale=0.3, size=(BATCH, UNITS)).astype("float32") for _ in range(2)]
    return layer, rnn, x, state


def outputs_and_gradients(model, x, h_0, c_0, state_in_loss: bool):
    """``[sequence, h, c, d/dx, d/dh_0, d/dc_0, d/dweight...]`` (float32) of a loss of the sequence (and
    of ``h`` and ``c`` with ``state_in_loss``; otherwise their gradients come in as None)."""
    with tf.GradientTape() as tape:
        tape.watch([x, h_0, c_0])
        sequence, h, c = (tf.cast(t, tf.float32) for t in model(x, initial_state=[h_0, c_0]))
        loss = tf.reduce_sum(sequence * tf.sin(sequence))
        if state_in_loss:
            loss += tf.reduce_sum(h * tf.range(1.0, UNITS + 1)) - tf.reduce_sum(c * tf.cos(tf.range(1.0, UNITS + 1)))
    return [sequence, h, c, *tape.gradient(loss, [x, h_0, c_0, *model.trainable_weights])]


@pytest.mark.parametrize("graph", [False, True], ids=["eager", "tf.function"])
def test_hand_written_gradient_equals_autodiff_of_the_step(clipped_pair, graph):
    """PeepholeLSTM's outputs and hand-written gradients (w.r.t. the input, the initial state
    and every weight) equal autodiff through the step of RNN(PeepholeLSTMCell), from a given
    state and with some cells clipped (where the gradient through ``c`` stops), with and
    without the returned state in the loss."""
    layer, rnn, x, (h_0, c_0) = clipped_pair
    weights = [np.float64(w) for w in rnn.get_weights()]
    _, _, unclipped = reference(np.float64(x), *weights, CLIP, 1.0, np.float64(h_0), np.float64(c_0))
    assert 0.2 < np.mean(np.abs(unclipped) > CLIP) < 0.8  # clipping is active on some cells, not all
    names = [*OUTPUTS, "input", "h_0", "c_0", *WEIGHTS]
    for state_in_loss in (True, False):
        results = []
        for model in (layer, rnn):
            run = functools.partial(outputs_and_gradients, model, state_in_loss=state_in_loss)
            results.append((tf.function(run) if graph else run)(*(tf.constant(v) for v in (x, h_0, c_0))))
        for name, got, want in zip(names, *results):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name}, state in the loss: {state_in_loss}")


def test_mixed_bfloat16_runs_the_recurrence_in_float32():
    """Under mixed_bfloat16 the input projection runs in bf16 and the recurrence in float32 on
    the float32 recurrent weights: with inputs, kernel and bias exact in bf16 (and so x·W + b),
    the outputs are the float32 layer's rounded to bf16 (a bf16 recurrence drifts further),
    and the gradients are float32 and as close to the float32 layer's as bf16 allows."""
    rng = np.random.default_rng(3)
    grid = np.float32([-1, -0.5, -0.25, 0, 0.25, 0.5, 1])  # products and sums of these stay exact in bf16
    fp32, _ = peephole_layer("layer", CLIP)
    bf16 = PeepholeLSTM(UNITS, cell_clip=CLIP, return_state=True, dtype="mixed_bfloat16")
    bf16.build((None, None, INPUT_DIM))
    values = [rng.choice(grid, size=w.shape) if name in ("kernel", "bias") else rng.normal(scale=0.7, size=w.shape)
              for name, w in zip(WEIGHTS, fp32.weights)]
    fp32.set_weights(values)
    bf16.set_weights(values)
    x, h_0, c_0 = (tf.constant(rng.choice(grid, size=shape)) for shape in
                   [(BATCH, STEPS, INPUT_DIM), (BATCH, UNITS), (BATCH, UNITS)])
    want = outputs_and_gradients(fp32, x, h_0, c_0, state_in_loss=True)
    got = outputs_and_gradients(bf16, x, h_0, c_0, state_in_loss=True)
    assert [t.dtype for t in bf16(x, initial_state=[h_0, c_0])] == [tf.bfloat16] * 3
    for name, g, w in zip(OUTPUTS, got, want):
        np.testing.assert_allclose(g, w, rtol=2**-8, atol=1e-6, err_msg=name)  # one bf16 rounding
    gradients = dict(zip(["input", "h_0", "c_0", *WEIGHTS], zip(got[3:], want[3:])))
    for name, (g, w) in gradients.items():
        assert g.dtype == tf.float32, name
        np.testing.assert_allclose(g, w, rtol=0.02, atol=0.02 * np.abs(w).max(), err_msg=name)


def test_train_step_under_xla_matches_autodiff_of_the_step():
    """One SGD step of a tiny model compiled with XLA (jit_compile=True) gives the loss and
    the updated weights of the same model with RNN(PeepholeLSTMCell) and no XLA."""
    rng = np.random.default_rng(4)

    def tiny(recurrent):
        x = keras.Input((STEPS, INPUT_DIM))
        return keras.Model(x, keras.layers.Dense(1)(recurrent(x)))

    ours = tiny(PeepholeLSTM(UNITS, cell_clip=CLIP))
    autodiff = tiny(keras.layers.RNN(PeepholeLSTMCell(UNITS, cell_clip=CLIP), return_sequences=True))
    autodiff.set_weights([rng.normal(scale=0.7, size=w.shape) for w in autodiff.weights])
    ours.set_weights(autodiff.get_weights())
    x = rng.normal(size=(BATCH, STEPS, INPUT_DIM)).astype("float32")
    y = rng.normal(size=(BATCH, STEPS, 1)).astype("float32")
    losses = []
    for model, jit in ((ours, True), (autodiff, False)):
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse", jit_compile=jit)
        losses.append(model.train_on_batch(x, y))
    assert ours.jit_compile
    np.testing.assert_allclose(*losses, rtol=1e-5)
    for name, got, want in zip([w.path for w in autodiff.weights], ours.get_weights(), autodiff.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=name)


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
