"""The TF CCC and the training loss: NumPy reference, invariants, masks, Keras compile/fit."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from emotion_e2e.losses import CCCLoss, ccc


def ccc_ref(x, y, w=None):
    """Weighted population CCC in float64, straight from the formula of docs/design.md §1."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    w = np.ones_like(x) if w is None else np.asarray(w, np.float64).reshape(w.shape + (1,) * (x.ndim - w.ndim))
    x, y, w = x.ravel(), y.ravel(), np.broadcast_to(w, x.shape).ravel()
    mx, my = np.sum(w * x) / w.sum(), np.sum(w * y) / w.sum()
    vx, vy = np.sum(w * (x - mx) ** 2) / w.sum(), np.sum(w * (y - my) ** 2) / w.sum()
    cov = np.sum(w * (x - mx) * (y - my)) / w.sum()
    return 2 * cov / (vx + vy + (mx - my) ** 2)


def pair(rng, shape, noise=1.0):
    x = rng.normal(0.1, 0.3, size=shape)
    y = 0.7 * x + 0.2 + noise * rng.normal(0, 0.2, size=shape)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("shape", [(7,), (2, 150), (3, 11, 1), (4, 5, 6)])
def test_matches_numpy_reference(shape):
    rng = np.random.default_rng(sum(shape))
    x, y = pair(rng, shape)
    np.testing.assert_allclose(float(ccc(x, y)), ccc_ref(x, y), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 150), (3, 40)])
def test_matches_numpy_reference_with_mask(shape):
    rng = np.random.default_rng(1)
    x, y = pair(rng, shape)
    mask = (rng.random(shape) > 0.3).astype(np.float32)
    np.testing.assert_allclose(float(ccc(x, y, mask)), ccc_ref(x[mask > 0], y[mask > 0]), rtol=1e-5, atol=1e-6)
    # Non-binary weights too, and a per-sequence (batch,) weight broadcast over time.
    w = rng.random(shape).astype(np.float32)
    np.testing.assert_allclose(float(ccc(x, y, w)), ccc_ref(x, y, w), rtol=1e-5, atol=1e-6)
    wb = np.array([1.0] + [0.0] * (shape[0] - 1), np.float32)
    np.testing.assert_allclose(float(ccc(x, y, wb)), ccc_ref(x[0], y[0]), rtol=1e-5, atol=1e-6)


def test_identity_gives_one_and_zero_loss():
    rng = np.random.default_rng(2)
    for shape in [(2, 150), (5, 3), (1, 1000)]:
        x = rng.normal(size=shape).astype(np.float32) * 0.05 + 0.3
        assert abs(float(ccc(x, x)) - 1.0) < 1e-6
        assert abs(float(CCCLoss()(x, x))) < 1e-6
        mask = (rng.random(shape) > 0.5).astype(np.float32)
        mask.flat[:2] = 1.0
        if np.ptp(x[mask > 0]) > 0:
            assert abs(float(CCCLoss()(x, x, sample_weight=mask))) < 1e-6


def test_identity_with_tiny_variance_is_still_one():
    x = (0.3 + 1e-4 * np.random.default_rng(12).normal(size=(2, 150))).astype(np.float32)
    assert float(ccc(x, x)) == 1.0


def test_symmetric():
    x, y = pair(np.random.default_rng(3), (2, 50))
    assert float(ccc(x, y)) == pytest.approx(float(ccc(y, x)), abs=1e-7)


def test_offset_and_scale_penalised_by_closed_form():
    x = np.random.default_rng(4).normal(size=(2, 150)).astype(np.float64)
    x -= x.mean()
    v = x.var()
    c = 0.5
    # For a zero-mean x: CCC(x, x + c) = 2v / (2v + c²); CCC(x, a·x) = 2a·v / (v + a²v) = 2a / (1 + a²).
    assert float(ccc(x, x + c)) < 1.0
    assert float(ccc(x, x + c)) == pytest.approx(2 * v / (2 * v + c * c), rel=1e-9)
    a = 2.0
    assert float(ccc(x, a * x)) < 1.0
    assert float(ccc(x, a * x)) == pytest.approx(2 * a / (1 + a * a), rel=1e-9)
    # Pearson would be 1 for both; the float32 path agrees too.
    assert float(ccc(x.astype(np.float32), (x + c).astype(np.float32))) == pytest.approx(2 * v / (2 * v + c * c),
                                                                                          rel=1e-5)


def test_anti_correlated_is_minus_one():
    x = np.random.default_rng(5).normal(0.4, 0.2, size=(2, 30))
    y = 2 * x.mean() - x  # same mean and variance, correlation −1
    assert float(ccc(x.astype(np.float32), y.astype(np.float32))) == pytest.approx(-1.0, abs=1e-6)
    assert float(CCCLoss()(x, y)) == pytest.approx(2.0, abs=1e-6)


def test_masked_frames_do_not_matter():
    rng = np.random.default_rng(6)
    x, y = pair(rng, (2, 150))
    mask = np.ones((2, 150), np.float32)
    mask[1, 100:] = 0.0  # a padded tail
    loss = CCCLoss()
    ref = float(loss(y, x, sample_weight=mask))
    x2, y2 = x.copy(), y.copy()
    x2[1, 100:] = 1e3 * rng.normal(size=50)
    y2[1, 100:] = -7.0
    assert float(loss(y2, x2, sample_weight=mask)) == pytest.approx(ref, abs=1e-6)
    assert ref == pytest.approx(1 - ccc_ref(x[mask > 0], y[mask > 0]), abs=1e-6)
    # Keras' per-element weighting would not give this: the masked value is 1 − CCC of the real frames.
    assert ref != pytest.approx(float(loss(y, x)), abs=1e-4)


def test_keras_mask_on_predictions_is_honoured():
    rng = np.random.default_rng(7)
    x, y = pair(rng, (2, 20))
    mask = np.ones((2, 20), bool)
    mask[0, 15:] = False
    pred = tf.constant(x)
    pred._keras_mask = tf.constant(mask)
    assert float(CCCLoss()(y, pred)) == pytest.approx(1 - ccc_ref(x[mask], y[mask]), abs=1e-6)


def test_fully_masked_batch_is_finite():
    x, y = pair(np.random.default_rng(8), (2, 10))
    loss = CCCLoss()(y, x, sample_weight=np.zeros((2, 10), np.float32))
    assert float(loss) == 1.0


def test_constant_equal_inputs_are_finite_with_finite_gradient():
    x = tf.Variable(tf.fill((2, 10), 0.3))
    with tf.GradientTape() as tape:
        loss = CCCLoss()(tf.fill((2, 10), 0.3), x)
    grad = tape.gradient(loss, x)
    assert np.isfinite(float(loss)) and np.all(np.isfinite(grad.numpy()))


def test_float16_inputs_compute_in_float32():
    x, y = pair(np.random.default_rng(9), (2, 150))
    x16, y16 = tf.constant(x, tf.float16), tf.constant(y, tf.float16)
    loss = CCCLoss()(y16, x16)
    assert loss.dtype == tf.float32
    ref = 1 - ccc_ref(x16.numpy(), y16.numpy())
    assert float(loss) == pytest.approx(ref, abs=1e-5)


def test_tf_function_equals_eager():
    rng = np.random.default_rng(10)
    x, y = pair(rng, (2, 150))
    mask = (rng.random((2, 150)) > 0.2).astype(np.float32)
    loss = CCCLoss()
    graph = tf.function(lambda a, b, m: loss(a, b, sample_weight=m))
    xla = tf.function(lambda a, b, m: loss(a, b, sample_weight=m), jit_compile=True)
    eager = float(loss(y, x, sample_weight=mask))
    assert float(graph(y, x, mask)) == pytest.approx(eager, abs=1e-6)
    assert float(xla(y, x, mask)) == pytest.approx(eager, abs=1e-6)
    # Unknown batch and time sizes in the graph.
    spec = tf.TensorSpec((None, None), tf.float32)
    dyn = tf.function(lambda a, b, m: loss(a, b, sample_weight=m), input_signature=[spec] * 3)
    assert float(dyn(y, x, mask)) == pytest.approx(eager, abs=1e-6)


def test_config_round_trip():
    loss = CCCLoss(epsilon=1e-6, name="arousal_ccc")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
    assert isinstance(again, CCCLoss)
    assert again.get_config() == loss.get_config() == {"name": "arousal_ccc", "epsilon": 1e-6}
    with pytest.raises(ValueError, match="epsilon"):
        CCCLoss(epsilon=0.0)


NAMES = ("arousal", "valence")
B, T, F = 4, 30, 3


def tiny_model():
    inp = keras.Input((None, F), name="x")
    outs = {n: keras.layers.Reshape((-1,), name=n)(keras.layers.Dense(1, name=f"{n}_dense")(inp)) for n in NAMES}
    return keras.Model(inp, outs)


def tiny_data(seed=11):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, F)).astype(np.float32)
    y = {"arousal": (x @ [0.5, -0.2, 0.1]).astype(np.float32),
         "valence": (x @ [0.0, 0.3, 0.4] + 0.5).astype(np.float32)}
    mask = np.ones((B, T), np.float32)
    mask[1, 20:] = 0.0
    mask[3, 5:] = 0.0
    return x, y, mask


def manual_loss(model, x, y, mask):
    pred = model(x)
    return np.mean([1 - ccc_ref(pred[n].numpy()[mask > 0], y[n][mask > 0]) for n in NAMES])


def test_compile_fit_with_sample_weight_mask():
    keras.utils.set_random_seed(0)
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss={n: CCCLoss() for n in NAMES},
                  loss_weights={n: 1.0 / len(NAMES) for n in NAMES})
    x, y, mask = tiny_data()
    sw = {n: mask for n in NAMES}
    ds = tf.data.Dataset.from_tensors((x, y, sw))

    before = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert before == pytest.approx(manual_loss(model, x, y, mask), abs=1e-5)
    # Garbage under the mask does not change the compiled loss.
    y_junk = {n: np.where(mask > 0, y[n], 100.0).astype(np.float32) for n in NAMES}
    junk = model.evaluate(tf.data.Dataset.from_tensors((x, y_junk, sw)), verbose=0, return_dict=True)["loss"]
    assert junk == pytest.approx(before, abs=1e-5)

    model.fit(ds, epochs=1, verbose=0)  # one real optimizer step
    after = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert after < before - 1e-3
    assert after == pytest.approx(manual_loss(model, x, y, mask), abs=1e-5)


def test_mixed_precision_model_trains():
    """float16 outputs: the loss is computed in float32, finite, and equals the float32 reference."""
    keras.utils.set_random_seed(1)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.outputs[0].dtype == "float16"
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss={n: CCCLoss() for n in NAMES},
                  loss_weights={n: 1.0 / len(NAMES) for n in NAMES})
    x, y, mask = tiny_data()
    ds = tf.data.Dataset.from_tensors((x, y, {n: mask for n in NAMES}))
    before = model.evaluate(ds, verbose=0, return_dict=True)["loss"]
    assert before == pytest.approx(manual_loss(model, x, y, mask), abs=1e-3)  # float16 outputs
    model.fit(ds, epochs=1, verbose=0)
    assert np.isfinite(model.evaluate(ds, verbose=0, return_dict=True)["loss"])


@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")  # never trained: nothing to load
def test_saved_model_with_the_loss_reloads(tmp_path):
    model = tiny_model()
    model.compile(loss={n: CCCLoss(epsilon=1e-7) for n in NAMES}, loss_weights={n: 0.5 for n in NAMES})
    x, y, mask = tiny_data()
    ds = tf.data.Dataset.from_tensors((x, y, {n: mask for n in NAMES}))
    path = str(tmp_path / "m.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    assert all(isinstance(again.loss[n], CCCLoss) and again.loss[n].epsilon == 1e-7 for n in NAMES)
    assert again.evaluate(ds, verbose=0) == pytest.approx(model.evaluate(ds, verbose=0), abs=1e-6)
