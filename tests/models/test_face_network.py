"""The face network: resnet50 (TF-slim's ResNet-v1-50), resnet50_keras (keras.applications) and
the basic-block resnet18 / resnet10."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from emotion_e2e.config import FaceNetConfig
from emotion_e2e.models import build_face_network, load_model
from emotion_e2e.models.face import slim_scope, slim_variable_names
from emotion_e2e.models.layers import CaffePreprocessing

SIZE = 96


def faces(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, SIZE, SIZE, 3)).astype("float32")


def regularized_kernels(model):
    """Conv / dense kernels anywhere in ``model`` (nested models included)."""
    return [layer.kernel for layer in model._flatten_layers()
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def basic_resnet_counts(stages, widths=(64, 128, 256, 512)):
    """(trainable, non-trainable, number of conv kernels) of a ResNet v1 with basic blocks:
    bias-free convs, batch norm = gamma, beta (trainable) + moving mean, variance."""
    conv = lambda k, c_in, c_out: k * k * c_in * c_out  # noqa: E731
    kernels, bn_channels = [conv(7, 3, widths[0])], [widths[0]]  # stem
    c_in = widths[0]
    for s, (width, blocks) in enumerate(zip(widths, stages)):
        for b in range(blocks):
            stride = 2 if s > 0 and b == 0 else 1
            kernels += [conv(3, c_in, width), conv(3, width, width)]
            bn_channels += [width, width]
            if stride != 1 or c_in != width:  # projection shortcut
                kernels.append(conv(1, c_in, width))
                bn_channels.append(width)
            c_in = width
    return sum(kernels) + 2 * sum(bn_channels), 2 * sum(bn_channels), len(kernels)


@pytest.fixture(scope="module")
def resnet50():
    """The paper's face network: TF-slim's ResNet-v1-50 (the default backbone)."""
    return build_face_network(FaceNetConfig(), SIZE)


@pytest.fixture(scope="module")
def resnet50_keras():
    # weights='none' must never download anything.
    def no_download(*args, **kwargs):
        raise AssertionError(f"unexpected download: {args} {kwargs}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("keras.src.utils.file_utils.get_file", no_download)
        return build_face_network(FaceNetConfig(backbone="resnet50_keras"), SIZE)


@pytest.fixture(scope="module", params=["resnet50", "resnet50_keras"])
def any_resnet50(request):
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(scope="module", params=["resnet18", "resnet10"])
def basic(request):
    return request.param, build_face_network(FaceNetConfig(backbone=request.param), SIZE)


def layers_of(net, kind):
    return [la for la in net._flatten_layers() if isinstance(la, kind)]


def test_slim_resnet50_parameter_count(resnet50):
    # tf_slim 1.1.0: resnet_v1_50(num_classes=None) under resnet_arg_scope(), variables counted in a TF1 graph.
    trainable, non_trainable = 23_508_032, 53_120
    assert int(sum(np.prod(w.shape) for w in resnet50.trainable_weights)) == trainable
    assert int(sum(np.prod(w.shape) for w in resnet50.non_trainable_weights)) == non_trainable
    assert resnet50.count_params() == trainable + non_trainable == 23_561_152
    assert [la.name for la in resnet50.layers] == ["face_frames", "backbone"]  # no preprocessing
    assert tuple(resnet50.output.shape) == (None, 2048)


def unit(block, u):
    return f"resnet_v1_50.block{block}.unit_{u}.bottleneck_v1"


LAST_UNITS = {1: 3, 2: 4, 3: 6, 4: 3}


def test_slim_resnet50_sizes_after_root_and_blocks(resnet50):
    backbone = resnet50.get_layer("backbone")
    stages = {"resnet_v1_50.conv1.relu": 48, "resnet_v1_50.pool1": 24}
    stages.update({f"{unit(b, u)}.relu": size for (b, u), size in zip(LAST_UNITS.items(), (12, 6, 3, 3))})
    probe = keras.Model(backbone.input, [backbone.get_layer(name).output for name in stages])
    outputs = probe(faces(1), training=False)
    got = {name: tuple(out.shape) for name, out in zip(stages, outputs)}
    channels = {"resnet_v1_50.conv1.relu": 64, "resnet_v1_50.pool1": 64}
    channels.update({f"{unit(b, u)}.relu": 256 * 2 ** (b - 1) for b, u in LAST_UNITS.items()})
    assert got == {name: (1, size, size, channels[name]) for name, size in stages.items()}
    assert tuple(resnet50(faces(2), training=False).shape) == (2, 2048)


def test_slim_resnet50_strides_in_the_last_unit(resnet50):
    backbone = resnet50.get_layer("backbone")
    convs = layers_of(backbone, keras.layers.Conv2D)
    strided = {la.name: la.strides for la in convs if la.strides != (1, 1)}
    assert strided == {"resnet_v1_50.conv1": (2, 2), **{f"{unit(b, LAST_UNITS[b])}.conv2": (2, 2) for b in (1, 2, 3)}}
    # conv2d_same: explicit padding, then VALID; every other conv is SAME
    for name in strided:
        k = backbone.get_layer(name).kernel_size[0]
        assert backbone.get_layer(name).padding == "valid"
        assert backbone.get_layer(f"{name}.pad").padding == (((k - 1) // 2, k // 2),) * 2
    assert all(la.padding == "same" for la in convs if la.name not in strided)
    # the shortcut: a projection in each block's first unit, a 1×1 stride-2 subsample where the stride is
    projections = {la.name for la in convs if la.name.endswith(".shortcut")}
    assert projections == {f"{unit(b, 1)}.shortcut" for b in LAST_UNITS}
    for b in (1, 2, 3):
        pool = backbone.get_layer(f"{unit(b, LAST_UNITS[b])}.shortcut")
        assert isinstance(pool, keras.layers.MaxPooling2D) and pool.pool_size == (1, 1) and pool.strides == (2, 2)
    pool1 = backbone.get_layer("resnet_v1_50.pool1")
    assert (pool1.pool_size, pool1.strides, pool1.padding) == ((3, 3), (2, 2), "same")


def test_slim_resnet50_convs_and_batch_norms(resnet50):
    convs = layers_of(resnet50, keras.layers.Conv2D)
    bns = layers_of(resnet50, keras.layers.BatchNormalization)
    assert len(convs) == len(bns) == 53
    assert not any(la.use_bias for la in convs)
    assert {la.name + ".BatchNorm" for la in convs} == {la.name for la in bns}
    assert all(la.epsilon == 1e-5 and la.momentum == FaceNetConfig().bn_momentum == 0.997 for la in bns)
    assert all(la.center and la.scale for la in bns)


def test_slim_variable_names(resnet50):
    backbone = resnet50.get_layer("backbone")
    names = {}
    for layer in backbone.layers:
        names.update(zip(slim_variable_names(layer), layer.weights))
    assert len(names) == len(backbone.weights) == 53 * 5
    root = backbone.get_layer("resnet_v1_50.conv1")
    assert slim_scope(root.name) == "resnet_v1_50/conv1"
    assert names["resnet_v1_50/conv1/weights"] is root.kernel
    assert tuple(root.kernel.shape) == (7, 7, 3, 64)  # HWIO, as slim stores it
    bn = backbone.get_layer(f"{unit(4, 3)}.conv3.BatchNorm")
    assert slim_variable_names(bn) == [f"resnet_v1_50/block4/unit_3/bottleneck_v1/conv3/BatchNorm/{v}"
                                       for v in ("gamma", "beta", "moving_mean", "moving_variance")]
    assert names["resnet_v1_50/block1/unit_1/bottleneck_v1/shortcut/weights"].shape == (1, 1, 64, 256)


def test_conv2d_same_equals_explicit_padding(resnet50):
    """The strided convs pad (k − 1) // 2 zeros before and the rest after, as slim's
    conv2d_same, not as Keras' 'same' (which puts the odd zero after only)."""
    backbone = resnet50.get_layer("backbone")
    root, conv2 = backbone.get_layer("resnet_v1_50.conv1"), backbone.get_layer(f"{unit(1, 3)}.conv2")
    conv2_pad = backbone.get_layer(f"{unit(1, 3)}.conv2.pad")
    probe = keras.Model(backbone.input, [root.output, conv2_pad.input, conv2.output])
    x = faces(1, seed=5)
    got_root, conv2_input, got_conv2 = (np.asarray(t) for t in probe(x, training=False))
    for got, inputs, layer, pad in ((got_root, x, root, 3), (got_conv2, conv2_input, conv2, 1)):
        kernel = np.asarray(layer.kernel)
        want = tf.nn.conv2d(tf.pad(inputs, [[0, 0], [pad, pad], [pad, pad], [0, 0]]), kernel, 2, "VALID")
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        assert not np.allclose(got, tf.nn.conv2d(inputs, kernel, 2, "SAME"), atol=1e-3 * np.abs(want).max())


def test_resnet50_keras_parameter_count_and_shape(resnet50_keras):
    reference = keras.applications.ResNet50(include_top=False, weights=None, pooling="avg",
                                            input_shape=(SIZE, SIZE, 3))
    assert resnet50_keras.count_params() == reference.count_params() == 23_587_712
    assert resnet50_keras.get_layer("caffe_preprocessing").weights == []
    assert tuple(resnet50_keras.output.shape) == (None, 2048)
    out = np.asarray(resnet50_keras(faces(2), training=False))
    assert out.shape == (2, 2048) and np.isfinite(out).all()


def test_imagenet_weights_for_resnet50_keras_only():
    assert FaceNetConfig(backbone="resnet50_keras", weights="imagenet").weights == "imagenet"
    for backbone in ("resnet50", "resnet18", "resnet10"):
        with pytest.raises(ValueError, match=f"ImageNet weights exist for resnet50_keras .*backbone='{backbone}'"):
            FaceNetConfig(backbone=backbone, weights="imagenet")


def test_resnet50_l2_and_bn_momentum(any_resnet50):
    _, net = any_resnet50
    kernels = regularized_kernels(net)
    assert len(kernels) == 53
    assert len(net.losses) == len(kernels)
    np.testing.assert_allclose(sorted(float(v) for v in net.losses),
                               sorted(1e-4 * float(np.sum(np.square(k))) / 2 for k in kernels), rtol=1e-4)
    bns = layers_of(net, keras.layers.BatchNormalization)
    assert len(bns) == 53 and all(la.momentum == FaceNetConfig().bn_momentum for la in bns)


def test_resnet50_l2_survives_config_round_trip(any_resnet50):
    _, net = any_resnet50
    clone = keras.Model.from_config(net.get_config())
    assert len(clone.losses) == 53


def test_resnet50_save_and_reload(any_resnet50, tmp_path):
    backbone, net = any_resnet50
    path = str(tmp_path / f"{backbone}.keras")
    net.save(path)
    loaded = load_model(path)
    x = faces(1, seed=6)
    np.testing.assert_array_equal(loaded(x, training=False), net(x, training=False))
    assert [la.name for la in layers_of(loaded, keras.layers.Conv2D)] == [
        la.name for la in layers_of(net, keras.layers.Conv2D)]


def test_bn_momentum_from_config():
    net = build_face_network(FaceNetConfig(backbone="resnet10", bn_momentum=0.9), SIZE)
    bns = [la for la in net._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]
    assert len(bns) == 12 and all(la.momentum == 0.9 for la in bns)


def test_caffe_preprocessing_equals_keras():
    x = faces(2, seed=3)
    expected = keras.applications.resnet.preprocess_input(255.0 * x.copy())
    np.testing.assert_allclose(CaffePreprocessing()(x), expected, rtol=1e-5, atol=1e-4)


def test_basic_resnet_counts_and_shape(basic):
    backbone, net = basic
    trainable, statistics, n_kernels = basic_resnet_counts(
        {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}[backbone])
    assert int(sum(np.prod(w.shape) for w in net.trainable_weights)) == trainable
    assert int(sum(np.prod(w.shape) for w in net.non_trainable_weights)) == statistics
    if backbone == "resnet18":
        assert trainable == 11_176_512  # torchvision's resnet18 without its 1000-way fc
    assert len(regularized_kernels(net)) == n_kernels == len(net.losses)
    assert tuple(net.output.shape) == (None, 512)
    assert tuple(net(faces(2), training=False).shape) == (2, 512)


@pytest.mark.parametrize("backbone", ["resnet10", "resnet50"])
def test_local_weights_file_round_trip(tmp_path, backbone):
    cfg = FaceNetConfig(backbone=backbone)
    source = build_face_network(cfg, SIZE)
    path = str(tmp_path / f"{backbone}.weights.h5")
    source.get_layer("backbone").save_weights(path)
    loaded = build_face_network(dataclasses.replace(cfg, weights=path), SIZE)
    fresh = build_face_network(cfg, SIZE)
    x = faces(2, seed=4)
    np.testing.assert_array_equal(loaded(x, training=False), source(x, training=False))
    assert not np.allclose(fresh(x, training=False), source(x, training=False))
    assert len(loaded.losses) == len(source.losses)


def test_missing_weights_file_raises(tmp_path):
    missing = str(tmp_path / "nope.weights.h5")
    with pytest.raises(FileNotFoundError, match="nope.weights.h5"):
        build_face_network(FaceNetConfig(backbone="resnet10", weights=missing), SIZE)
