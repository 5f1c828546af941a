"""The assembled model: inputs/outputs per modality, fusion sizes, dynamic time, save → load, warm start."""

import dataclasses

import keras
import numpy as np
import pytest

from emotion_e2e.config import FaceNetConfig, InputConfig, ModelConfig, RecurrentConfig
from emotion_e2e.models import FoldTime, UnfoldTime, copy_feature_weights, feature_network
from model_inputs import Spec, random_inputs

SMALL_RNN = RecurrentConfig(layers=2, units=8)
LABELS = ("arousal", "valence")


def batch(cfg, b=1, t=3, seed=0):
    return random_inputs(cfg, b, t, seed)


def predict(model, x):
    return {k: np.asarray(v) for k, v in model(x, training=False).items()}


AUDIO_CFG = Spec(ModelConfig(recurrent=SMALL_RNN), InputConfig(modalities=("audio",)))
FACE_CFG = Spec(ModelConfig(face=FaceNetConfig(backbone="resnet10"), recurrent=SMALL_RNN),
                InputConfig(modalities=("face",), label_names=("arousal", "valence", "liking")))
MULTI_CFG = Spec(ModelConfig(), InputConfig())  # the paper's: slim's ResNet-v1-50, 2 × 256 peephole LSTMs


def with_rnn(spec, recurrent):
    return spec._replace(model=dataclasses.replace(spec.model, recurrent=recurrent))


@pytest.fixture(scope="module")
def audio_model():
    return AUDIO_CFG.build()


@pytest.fixture(scope="module")
def face_model():
    return FACE_CFG.build()


@pytest.fixture(scope="module")
def multi_model():
    return MULTI_CFG.build()


@pytest.mark.parametrize("which, cfg, inputs, features, feature_layer", [
    ("audio_model", AUDIO_CFG, {"audio": (None, None, 640)}, 1280, "audio_features"),
    ("face_model", FACE_CFG, {"face": (None, None, 96, 96, 3)}, 512, "face_features"),
    ("multi_model", MULTI_CFG, {"audio": (None, None, 640), "face": (None, None, 96, 96, 3)}, 3328, "fusion"),
])
def test_inputs_outputs_and_fused_size(request, which, cfg, inputs, features, feature_layer):
    model = request.getfixturevalue(which)
    assert {k: tuple(v.shape) for k, v in model.input.items()} == inputs
    assert tuple(model.get_layer(feature_layer).output.shape) == (None, None, features)
    assert tuple(model.get_layer("lstm_1").input.shape) == (None, None, features)
    # Keras flattens dict outputs in sorted key order: output_names / model.outputs are sorted,
    # calling the model returns the dict as built (label order).
    assert list(model.output_names) == sorted(cfg.label_names)
    assert all(model.get_layer(label) for label in cfg.label_names)
    out = predict(model, batch(cfg, b=2, t=3))
    assert list(out) == list(cfg.label_names)
    assert all(v.shape == (2, 3) and v.dtype == np.float32 for v in out.values())


def test_multimodal_feature_sizes(multi_model):
    assert tuple(multi_model.get_layer("audio_features").output.shape) == (None, None, 1280)
    assert tuple(multi_model.get_layer("face_features").output.shape) == (None, None, 2048)
    assert {la.name for la in multi_model.layers} >= {"audio_network", "face_network"}
    assert not any(isinstance(la, keras.layers.TimeDistributed) for la in multi_model._flatten_layers())


def peephole_lstm_params(inputs, units):
    return 4 * units * (inputs + units + 1) + 3 * units  # kernels + bias for i, j, f, o; 3 peepholes


def test_multimodal_parameter_count(multi_model):
    audio = feature_network(multi_model, "audio").count_params()
    resnet50 = feature_network(multi_model, "face").count_params()
    lstms = peephole_lstm_params(1280 + 2048, 256) + peephole_lstm_params(256, 256)
    head = len(LABELS) * (256 + 1)
    assert audio == 65_120
    assert resnet50 == 23_561_152  # slim's resnet_v1_50 without logits (test_face_network.py)
    assert multi_model.count_params() == audio + resnet50 + lstms + head == 27_824_674


def test_variable_time_and_causality(audio_model):
    long = batch(AUDIO_CFG, b=2, t=5, seed=1)
    short = {"audio": long["audio"][:, :3]}
    out5, out3 = predict(audio_model, long), predict(audio_model, short)
    for label in LABELS:
        assert out5[label].shape == (2, 5) and out3[label].shape == (2, 3)
        # per-frame networks + a forward LSTM: the first 3 steps do not see the later ones
        np.testing.assert_allclose(out5[label][:, :3], out3[label], atol=1e-5)


def test_batch_elements_are_independent(face_model):
    x = batch(FACE_CFG, b=2, t=4, seed=2)
    both, first = predict(face_model, x), predict(face_model, {"face": x["face"][:1]})
    for label in FACE_CFG.label_names:
        np.testing.assert_allclose(both[label][:1], first[label], atol=1e-5)


def test_fold_unfold_round_trip():
    x = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    folded = FoldTime()(x)
    assert tuple(folded.shape) == (6, 4, 5)
    np.testing.assert_array_equal(folded[4], x[1, 1])
    np.testing.assert_array_equal(UnfoldTime()([np.reshape(folded, (6, 20)), x]), x.reshape(2, 3, 20))


def test_save_load_gives_identical_predictions(multi_model, tmp_path):
    path = str(tmp_path / "model.keras")
    multi_model.save(path)
    loaded = keras.saving.load_model(path)
    x = batch(MULTI_CFG, b=1, t=3, seed=3)
    before, after = predict(multi_model, x), predict(loaded, x)
    for label in LABELS:
        np.testing.assert_array_equal(before[label], after[label])
    assert len(loaded.losses) == len(multi_model.losses) == 2 + 53


def test_copy_feature_weights(audio_model, multi_model):
    src, dst = feature_network(audio_model, "audio"), feature_network(multi_model, "audio")
    assert not np.allclose(src.get_layer("conv2_conv").kernel, dst.get_layer("conv2_conv").kernel)
    face_before = [np.array(w) for w in feature_network(multi_model, "face").weights]
    assert copy_feature_weights(audio_model, multi_model, "audio") == len(src.weights) == 10  # 2 conv kernels, 2 × 4 batch-norm tensors
    for s, d in zip(src.weights, dst.weights):
        np.testing.assert_array_equal(s, d)
    for before, after in zip(face_before, feature_network(multi_model, "face").weights):
        np.testing.assert_array_equal(before, after)


def test_copy_feature_weights_errors(audio_model, face_model, multi_model):
    with pytest.raises(ValueError, match="no 'face_network'"):
        copy_feature_weights(audio_model, multi_model, "face")
    with pytest.raises(ValueError, match="face_network"):  # resnet10 into resnet50
        copy_feature_weights(face_model, multi_model, "face")
    with pytest.raises(ValueError, match="modality='video'"):
        copy_feature_weights(audio_model, multi_model, "video")


def test_standard_cell_and_no_recurrent_layers():
    standard = with_rnn(AUDIO_CFG, RecurrentConfig(layers=1, units=6, cell="standard")).build()
    assert isinstance(standard.get_layer("lstm_1"), keras.layers.LSTM)
    assert predict(standard, batch(AUDIO_CFG, t=4))["valence"].shape == (1, 4)
    direct = with_rnn(AUDIO_CFG, RecurrentConfig(layers=0)).build()
    assert not any(la.name.startswith("lstm") for la in direct.layers)
    assert direct.get_layer("head_arousal").kernel.shape == (1280, 1)
    assert predict(direct, batch(AUDIO_CFG, t=4))["arousal"].shape == (1, 4)


def test_one_training_step():
    model = AUDIO_CFG.build()
    model.compile(optimizer="adam", loss={label: "mse" for label in LABELS})
    x = batch(AUDIO_CFG, b=2, t=3)
    y = {label: np.zeros((2, 3), "float32") for label in LABELS}
    before = np.array(model.get_layer("head_arousal").kernel)
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss).all()
    assert not np.allclose(before, model.get_layer("head_arousal").kernel)


@pytest.mark.parametrize("policy, compute, outputs", [("mixed_bfloat16", "bfloat16", "float32"),
                                                     ("float64", "float64", "float64")])
def test_outputs_are_in_the_policys_variable_dtype(policy, compute, outputs):
    """float32 under mixed precision, so the loss sees float32; float64 throughout under float64."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = with_rnn(AUDIO_CFG, RecurrentConfig(layers=1, units=4)).build()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert feature_network(model, "audio").get_layer("conv1_conv").compute_dtype == compute
    assert {w.dtype for w in model.weights} == {"float32" if policy == "mixed_bfloat16" else "float64"}
    out = predict(model, batch(AUDIO_CFG, t=3))
    assert all(v.dtype == outputs and np.isfinite(v).all() for v in out.values())
