"""The raw-audio CNN: shapes, exact parameter count, channel pooling, dropout, L2."""

import dataclasses

import numpy as np
import pytest

from emotion_e2e.config import AudioNetConfig
from emotion_e2e.models import build_audio_network

CFG = AudioNetConfig()
SPF = 640  # samples per 40 ms frame at 16 kHz


@pytest.fixture(scope="module")
def net():
    return build_audio_network(CFG, SPF)


def frames(n, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, SPF)).astype("float32")


def n_params(weights):
    return int(sum(np.prod(w.shape) for w in weights))


def test_output_shape(net):
    assert tuple(net.input.shape) == (None, 640)
    assert tuple(net.output.shape) == (None, 1280)
    assert CFG.num_features(SPF) == 1280
    assert tuple(net(frames(3), training=False).shape) == (3, 1280)


def test_parameter_count_from_layer_sizes(net):
    c = CFG
    conv1 = c.conv1_kernel * 1 * c.conv1_filters  # no biases: batch norm's offset replaces them
    conv2 = c.conv2_kernel * c.conv1_filters * c.conv2_filters
    bn_trainable = 2 * c.conv1_filters + 2 * c.conv2_filters  # gamma, beta
    bn_statistics = 2 * c.conv1_filters + 2 * c.conv2_filters  # moving mean, variance
    assert n_params(net.trainable_weights) == conv1 + conv2 + bn_trainable == 800 + 64000 + 160
    assert n_params(net.non_trainable_weights) == bn_statistics == 160
    assert net.count_params() == 65120


def test_layer_settings(net):
    for name, kernel in (("conv1", CFG.conv1_kernel), ("conv2", CFG.conv2_kernel)):
        conv, bn = net.get_layer(f"{name}_conv"), net.get_layer(f"{name}_bn")
        assert conv.kernel_size == (kernel,) and conv.strides == (1,) and conv.padding == "same"
        assert bn.momentum == pytest.approx(0.997) and bn.epsilon == pytest.approx(1e-5)
    assert net.get_layer("pool1").pool_size == (2,)


def test_channel_max_pool_equals_numpy(net):
    import keras

    probe = keras.Model(net.input, [net.get_layer("conv2_relu").output, net.output])
    act, out = (np.asarray(t) for t in probe(frames(4, seed=1), training=False))
    assert act.shape == (4, 320, 40)
    # channels 10g..10g+9 at step t → feature 4t + g
    ref = np.empty((4, 320 * 4), "float32")
    for t in range(320):
        for g in range(4):
            ref[:, 4 * t + g] = act[:, t, 10 * g:10 * (g + 1)].max(axis=-1)
    np.testing.assert_array_equal(out, ref)
    assert (ref > 0).mean() > 0.5  # not a trivial all-zero comparison


def test_dropout_only_in_training():
    x = frames(3, seed=2)
    net = build_audio_network(CFG, SPF)
    np.testing.assert_array_equal(net(x, training=False), net(x, training=False))
    assert not np.allclose(net(x, training=True), net(x, training=True))
    # ... and the training-time randomness is the dropout's (batch norm is deterministic).
    plain = build_audio_network(dataclasses.replace(CFG, input_dropout=0.0), SPF)
    np.testing.assert_allclose(plain(x, training=True), plain(x, training=True), rtol=1e-6)


def test_l2_is_half_the_sum_of_squares_on_both_kernels(net):
    kernels = [net.get_layer("conv1_conv").kernel, net.get_layer("conv2_conv").kernel]
    losses = sorted(float(v) for v in net.losses)
    expected = sorted(1e-4 * float(np.sum(np.square(k))) / 2 for k in kernels)  # the authors' 1e-4
    assert CFG.l2 == 1e-4
    np.testing.assert_allclose(losses, expected, rtol=1e-5)


def keras_layers_copy(net, batch_norm=True):
    """``net`` rebuilt from plain ``keras.layers.Conv1D`` and (with ``batch_norm``)
    ``BatchNormalization`` (the formulation before ``PhaseConv1D`` and the fused batch norm),
    with ``net``'s weights."""
    import keras

    from emotion_e2e.models.kernels import FusedBatchNormalization, PhaseConv1D

    def plain(layer):
        config = layer.get_config()
        if isinstance(layer, PhaseConv1D):
            return keras.layers.Conv1D.from_config({k: v for k, v in config.items() if k != "phases"})
        if batch_norm and isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(net, clone_function=plain)
    copy.set_weights(net.get_weights())
    return copy


def outputs_gradients_statistics(net, x):
    """Training-mode output, gradients of a loss weighing every output with respect to the
    input and every trainable weight, the moving statistics after the step, inference output."""
    import tensorflow as tf

    x = tf.constant(x)
    before = [w.numpy() for w in net.non_trainable_weights]
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = net(x, training=True)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * tf.sin(tf.range(y.shape[-1], dtype=tf.float32)))
    grads = tape.gradient(loss, [x, *net.trainable_weights])
    updates = [w.numpy() - b for w, b in zip(net.non_trainable_weights, before)]  # momentum 0.997: compare the step
    return ([y, *grads, *updates, net(x, training=False)],
            ["y", "dx", *[w.path for w in net.trainable_weights], *[w.path for w in net.non_trainable_weights],
             "y inference"])


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_equals_the_keras_layers(policy):
    """Phase convolutions and the fused batch norm (float32 for its 40 channels under bf16)
    compute what Keras' Conv1D and BatchNormalization compute: outputs, gradients with respect
    to the input and every weight, moving statistics, in fp32 to rounding and in bf16 closely."""
    import keras

    cfg = dataclasses.replace(CFG, input_dropout=0.0)  # deterministic training-mode outputs
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(3)
        net = build_audio_network(cfg, SPF)
        rng = np.random.default_rng(4)
        for w in net.weights:  # batch norms far from the identity
            if w.path.endswith(("beta", "moving_mean")):
                w.assign(rng.uniform(-0.2, 0.2, w.shape))
            elif w.path.endswith(("gamma", "moving_variance")):
                w.assign(rng.uniform(0.5, 1.5, w.shape))
        ref = keras_layers_copy(net)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert [w.path for w in ref.weights] == [w.path for w in net.weights]
    x = frames(6, seed=5)
    got, names = outputs_gradients_statistics(net, x)
    want, _ = outputs_gradients_statistics(ref, x)
    for name, g, w in zip(names, got, want):
        g, w = np.asarray(g, np.float32), np.asarray(w, np.float32)
        scale = np.abs(w).max()
        assert scale > 0, name
        if policy == "float32":
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
        else:  # bf16 activations and kernels (2⁻⁸ per rounding) against Keras' float32 batch-norm arithmetic
            assert np.linalg.norm(g - w) <= 0.03 * np.linalg.norm(w), name


def test_a_network_saved_with_keras_conv1d_loads_and_computes_the_same(tmp_path):
    """A network saved before ``PhaseConv1D`` (Keras' Conv1D, same weights) reloads as it was
    saved and computes what the network built now computes."""
    import keras

    keras.utils.set_random_seed(6)
    net = build_audio_network(CFG, SPF)
    old = keras_layers_copy(net, batch_norm=False)
    old.save(tmp_path / "old.keras")
    loaded = keras.saving.load_model(tmp_path / "old.keras")
    assert type(loaded.get_layer("conv2_conv")) is keras.layers.Conv1D
    x = frames(3, seed=7)
    np.testing.assert_allclose(loaded(x, training=False), net(x, training=False), rtol=1e-5, atol=1e-5)
