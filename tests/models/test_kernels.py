"""The fused-kernel layers and optimizer against the Keras originals they replace: same
outputs, gradients, moving statistics and updates (up to fp32 rounding), same config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e.models.kernels import FusedAdam, FusedBatchNormalization, MatmulConv2D, PhaseConv1D
from emotion_e2e.models.layers import HalfL2

RTOL, ATOL = 1e-5, 1e-5


def pair(keras_layer, ours, shape, rng):
    """Both layers built for ``shape`` with the same random weights."""
    keras_layer.build(shape)
    ours.build(shape)
    keras_layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in keras_layer.weights])
    ours.set_weights(keras_layer.get_weights())
    return keras_layer, ours


def outputs_and_gradients(layer, x, training=None):
    """``[y, dL/dx, dL/dw for every trainable weight]`` of a loss that weighs every output."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x) if training is None else layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(tf.cast(x, tf.float32) if x.shape == y.shape else 1.0))
    return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


@pytest.mark.parametrize("shape", [(4, 7, 5, 6), (3, 11, 6), (1, 1, 1, 3)], ids=["nhwc", "nsc", "one pixel"])
def test_batch_norm_equals_keras(shape):
    rng = np.random.default_rng(0)
    bn, fused = pair(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
                     FusedBatchNormalization(momentum=0.9, epsilon=1e-5), shape, rng)
    # One pixel per channel: x − mean is rounding noise, which 1/√ε magnifies 316 times.
    atol = 1e-4 if shape == (1, 1, 1, 3) else ATOL
    for step in range(2):  # two updates of the moving statistics
        x = tf.constant(rng.normal(2, 3, shape), tf.float32)
        for name, got, want in zip(("y", "dx", "dgamma", "dbeta"), outputs_and_gradients(fused, x, True),
                                   outputs_and_gradients(bn, x, True)):
            np.testing.assert_allclose(got, want, rtol=RTOL, atol=atol, err_msg=f"step {step}: {name}")
    for got, want in zip(fused.non_trainable_weights, bn.non_trainable_weights):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-6, err_msg=got.path)
    assert np.abs(bn.moving_variance.numpy() - 1).max() > 0.5 or shape == (1, 1, 1, 3)  # really updated
    np.testing.assert_allclose(fused(x, training=False), bn(x, training=False), rtol=RTOL, atol=ATOL)


def test_batch_norm_without_scale_and_center_and_with_a_mask_equals_keras():
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, 9, 4)), tf.float32)
    bn, fused = pair(keras.layers.BatchNormalization(scale=False, center=False),
                     FusedBatchNormalization(scale=False, center=False), x.shape, rng)
    np.testing.assert_allclose(fused(x, training=True), bn(x, training=True), rtol=RTOL, atol=ATOL)
    mask = tf.constant(rng.uniform(size=(2, 9)) > 0.3)  # Keras' masked moments
    np.testing.assert_allclose(fused(x, training=True, mask=mask), bn(x, training=True, mask=mask),
                               rtol=RTOL, atol=ATOL)


def test_batch_norm_in_float64_is_keras_in_float64():
    """TF's fused kernel has no float64 version: in float64 the layer is Keras' own, in float64."""
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(2, 3, (4, 5, 5, 6)), tf.float64)
    bn, fused = pair(keras.layers.BatchNormalization(epsilon=1e-5, dtype="float64"),
                     FusedBatchNormalization(epsilon=1e-5, dtype="float64"), x.shape, rng)
    for got, want in zip(outputs_and_gradients(fused, x, True), outputs_and_gradients(bn, x, True)):
        assert got.dtype == tf.float64
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    for got, want in zip(fused.non_trainable_weights, bn.non_trainable_weights):
        np.testing.assert_allclose(got, want, rtol=1e-13, err_msg=got.path)


# Channel counts oneDNN's bf16 kernel does not block (8, 40: computed in float32) and one it does (32).
@pytest.mark.parametrize("shape", [(4, 6, 6, 8), (3, 20, 40), (3, 20, 32)])
def test_batch_norm_under_mixed_bfloat16_stays_bf16_and_close_to_fp32(shape):
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(1, 2, shape), tf.float32)
    ref, fused = pair(FusedBatchNormalization(), FusedBatchNormalization(dtype="mixed_bfloat16"), shape, rng)
    got, want = outputs_and_gradients(fused, x, True), outputs_and_gradients(ref, x, True)
    assert got[0].dtype == tf.bfloat16 and fused.gamma.dtype == "float32"
    for name, g, w in zip(("y", "dx", "dgamma", "dbeta"), got, want):
        w = np.asarray(w)
        np.testing.assert_allclose(tf.cast(g, tf.float32), w, rtol=0, atol=0.02 * np.abs(w).max(), err_msg=name)
    np.testing.assert_allclose(fused.moving_mean, ref.moving_mean, rtol=1e-2, atol=1e-3)
    np.testing.assert_allclose(fused.moving_variance, ref.moving_variance, rtol=1e-2, atol=1e-3)


def assert_conv_equals_keras(ours, conv, x):
    """Same output shape, output and gradients (input, kernel, bias) as the Keras convolution."""
    got, want = outputs_and_gradients(ours, x), outputs_and_gradients(conv, x)
    assert got[0].shape == want[0].shape == ours.compute_output_shape(x.shape)
    for name, g, w in zip(("y", "dx", "dkernel", "dbias"), got, want):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=name)


# 1×1 as a matmul; 3×3 maps (≤ 9 pixels in fp32): the matmul kernel gradient, odd and even
# kernels; larger maps and strides: Keras' convolution.
@pytest.mark.parametrize("kernel, strides, padding, size", [
    (1, 1, "same", 7), (1, 2, "same", 7), (1, 2, "valid", 7), (3, 1, "same", 3), (2, 1, "same", 3),
    (5, 1, "same", 3), (3, 1, "same", 7), (3, 2, "valid", 7)])
def test_conv_equals_keras(kernel, strides, padding, size):
    rng = np.random.default_rng(3)
    x = tf.constant(rng.normal(size=(2, size, size, 5)), tf.float32)
    conv, ours = pair(keras.layers.Conv2D(4, kernel, strides=strides, padding=padding),
                      MatmulConv2D(4, kernel, strides=strides, padding=padding), x.shape, rng)
    assert_conv_equals_keras(ours, conv, x)


def test_conv_under_mixed_bfloat16_matches_keras_to_bf16_rounding():
    """A 3×3 convolution on a 6×6 map: in bf16 its kernel gradient is the patches' matmul."""
    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(4, 6, 6, 16)), tf.float32)
    conv, ours = pair(keras.layers.Conv2D(8, 3, padding="same", dtype="mixed_bfloat16"),
                      MatmulConv2D(8, 3, padding="same", dtype="mixed_bfloat16"), x.shape, rng)
    for name, g, w in zip(("y", "dx", "dkernel", "dbias"), outputs_and_gradients(ours, x),
                          outputs_and_gradients(conv, x)):
        g, w = tf.cast(g, tf.float32), tf.cast(w, tf.float32)
        np.testing.assert_allclose(g, w, rtol=0, atol=0.02 * float(tf.reduce_max(tf.abs(w))), err_msg=name)


def test_conv_config_round_trip_and_dynamic_batch():
    conv = MatmulConv2D(3, 1, use_bias=False, kernel_regularizer=HalfL2(1e-4), name="c")
    config = conv.get_config()
    clone = keras.layers.deserialize(keras.layers.serialize(conv))
    assert type(clone) is MatmulConv2D and clone.get_config() == config
    assert isinstance(clone.kernel_regularizer, HalfL2) and clone.kernel_regularizer.l2 == 1e-4
    x = keras.Input((5, 5, 2))  # batch unknown when traced
    model = keras.Model(x, clone(x))
    assert tuple(model(np.ones((3, 5, 5, 2), "float32")).shape) == (3, 5, 5, 3)


# The audio network's two (tiny: steps, channels), odd and even kernels, kernels longer than the
# input, one phase per step, and lengths the phases do not divide (Keras' convolution).
@pytest.mark.parametrize("kernel, channels, filters, steps, phases", [
    (20, 1, 6, 40, 20), (40, 8, 8, 16, 4), (5, 3, 4, 12, 3), (4, 3, 4, 12, 6), (7, 2, 3, 9, 1), (3, 2, 3, 10, 4)])
def test_phase_conv1d_equals_keras(kernel, channels, filters, steps, phases):
    rng = np.random.default_rng(7)
    x = tf.constant(rng.normal(size=(3, steps, channels)), tf.float32)
    conv, ours = pair(keras.layers.Conv1D(filters, kernel, padding="same"),
                      PhaseConv1D(filters, kernel, padding="same", phases=phases), x.shape, rng)
    assert_conv_equals_keras(ours, conv, x)


def test_phase_conv1d_under_mixed_bfloat16_matches_keras_to_bf16_rounding():
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(4, 32, 8)), tf.float32)
    conv, ours = pair(keras.layers.Conv1D(8, 10, padding="same", use_bias=False, dtype="mixed_bfloat16"),
                      PhaseConv1D(8, 10, padding="same", use_bias=False, phases=4, dtype="mixed_bfloat16"),
                      x.shape, rng)
    for name, g, w in zip(("y", "dx", "dkernel"), outputs_and_gradients(ours, x), outputs_and_gradients(conv, x)):
        assert g.dtype == w.dtype, name
        g, w = tf.cast(g, tf.float32), tf.cast(w, tf.float32)
        np.testing.assert_allclose(g, w, rtol=0, atol=0.02 * float(tf.reduce_max(tf.abs(w))), err_msg=name)


def test_phase_conv1d_config_round_trip_and_dynamic_batch():
    conv = PhaseConv1D(3, 4, padding="same", use_bias=False, phases=2, name="c")
    config = conv.get_config()
    clone = keras.layers.deserialize(keras.layers.serialize(conv))
    assert type(clone) is PhaseConv1D and clone.get_config() == config and clone.phases == 2
    x = keras.Input((6, 2))  # batch unknown when traced
    model = keras.Model(x, clone(x))
    assert tuple(model(np.ones((3, 6, 2), "float32")).shape) == (3, 6, 3)
    assert [tuple(w.shape) for w in clone.weights] == [(4, 2, 3)]  # Keras' Conv1D kernel, no more


def test_half_l2_is_the_authors_weight_decay():
    w = np.random.default_rng(4).normal(size=(3, 3, 2, 4)).astype("float32")
    np.testing.assert_allclose(float(HalfL2(1e-4)(tf.constant(w))), 1e-4 * np.sum(w.astype("float64") ** 2) / 2,
                               rtol=1e-6)


def test_half_l2_in_float64_takes_l2_exactly():
    w = np.random.default_rng(4).normal(size=(3, 3, 2, 4))
    np.testing.assert_allclose(float(HalfL2(1e-4)(tf.constant(w))), 1e-4 * np.sum(w ** 2) / 2, rtol=1e-14)


def test_adam_in_float64_is_adams_formula_in_float64():
    """β₁, β₂ and ε enter in float64, not rounded through float32 (1 − 0.999f = 0.00100005). The
    learning rate is one float32 holds exactly: Keras keeps it in floatx."""
    rng, lr = np.random.default_rng(7), 2.0 ** -7
    w = rng.normal(size=(5, 3))
    variable, adam = keras.Variable(w, dtype="float64"), FusedAdam(lr, beta_1=0.9, beta_2=0.999, epsilon=1e-7)
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t in range(1, 4):
        g = rng.normal(size=w.shape) * 10.0 ** rng.integers(-9, 0, w.shape)  # some near ε
        adam.apply([tf.constant(g)], [variable])
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g ** 2
        w = w - lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(variable.numpy(), w, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_equals_keras(amsgrad):
    rng = np.random.default_rng(5)
    start = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=(3,)).astype("float32")]
    runs = []
    for optimizer in (keras.optimizers.Adam(0.01, epsilon=1e-7, amsgrad=amsgrad),
                      FusedAdam(0.01, epsilon=1e-7, amsgrad=amsgrad)):
        variables = [keras.Variable(v) for v in start]
        for step in range(5):
            grads = [tf.constant(np.random.default_rng(step).normal(size=v.shape), tf.float32) for v in variables]
            optimizer.apply(grads, variables)
        runs.append((optimizer, variables))
    (keras_adam, want), (fused, got) = runs
    assert int(fused.iterations) == 5
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)  # steps of 0.01: 1e-4 of a step
    # iterations, then m and v of each variable. The kernel computes 1 − β₂ in float32
    # (1 − 0.999f = 0.00100005), Keras in float64: v differs by a few 1e-5 of itself.
    for g, w in zip(fused.variables, keras_adam.variables):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-8, err_msg=g.path)
    assert np.abs(got[0].numpy() - start[0]).max() > 0.04  # five steps of about lr each


def test_adam_config_round_trip():
    adam = FusedAdam(3e-4, epsilon=1e-6)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(adam))
    assert type(clone) is FusedAdam and clone.get_config() == adam.get_config()
