"""The face network: resnet50 (keras.applications) and the basic-block resnet18 / resnet10."""

import dataclasses

import keras
import numpy as np
import pytest

from emotion_e2e.config import FaceNetConfig
from emotion_e2e.models import build_face_network
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
    # weights='none' must never download anything.
    def no_download(*args, **kwargs):
        raise AssertionError(f"unexpected download: {args} {kwargs}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("keras.src.utils.file_utils.get_file", no_download)
        return build_face_network(FaceNetConfig(backbone="resnet50"), SIZE)


@pytest.fixture(scope="module", params=["resnet18", "resnet10"])
def basic(request):
    return request.param, build_face_network(FaceNetConfig(backbone=request.param), SIZE)


def test_resnet50_parameter_count_and_shape(resnet50):
    reference = keras.applications.ResNet50(include_top=False, weights=None, pooling="avg",
                                            input_shape=(SIZE, SIZE, 3))
    assert resnet50.count_params() == reference.count_params() == 23_587_712
    assert resnet50.get_layer("caffe_preprocessing").weights == []
    assert tuple(resnet50.output.shape) == (None, 2048)
    out = np.asarray(resnet50(faces(2), training=False))
    assert out.shape == (2, 2048) and np.isfinite(out).all()


def test_resnet50_l2_and_bn_momentum(resnet50):
    kernels = regularized_kernels(resnet50)
    assert len(kernels) == 53
    assert len(resnet50.losses) == len(kernels)
    np.testing.assert_allclose(sorted(float(v) for v in resnet50.losses),
                               sorted(1e-4 * float(np.sum(np.square(k))) / 2 for k in kernels), rtol=1e-4)
    bns = [la for la in resnet50._flatten_layers() if isinstance(la, keras.layers.BatchNormalization)]
    assert bns and all(la.momentum == FaceNetConfig().bn_momentum for la in bns)


def test_resnet50_l2_survives_config_round_trip(resnet50):
    clone = keras.Model.from_config(resnet50.get_config())
    assert len(clone.losses) == 53


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


def test_local_weights_file_round_trip(tmp_path):
    cfg = FaceNetConfig(backbone="resnet10")
    source = build_face_network(cfg, SIZE)
    path = str(tmp_path / "resnet10.weights.h5")
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
