"""Inference-time transformations: batch norms folded into convolutions, LSTM input
projection hoisted out of the recurrence, LSTM state exposed for streaming; outputs must
match the unmodified model."""

import keras
import numpy as np
import pytest

from emotion_e2e.config import FaceNetConfig, InputConfig, ModelConfig, RecurrentConfig
from emotion_e2e.models.inference import (FoldedBatchNorm, fold_batch_norms, foldable_pairs, optimize_for_inference,
                                          state_names, with_recurrent_state)
from emotion_e2e.models.kernels import FusedBatchNormalization
from emotion_e2e.models.recurrent import PeepholeLSTM, PeepholeLSTMCell
from model_inputs import Spec, random_inputs

SMALL_RNN = RecurrentConfig(layers=2, units=8)
CONFIGS = {
    "audio": Spec(ModelConfig(recurrent=SMALL_RNN), InputConfig(modalities=("audio",))),
    "resnet10": Spec(ModelConfig(face=FaceNetConfig(backbone="resnet10"), recurrent=SMALL_RNN),
                     InputConfig(modalities=("face",))),
    "resnet50+audio": Spec(ModelConfig(), InputConfig()),  # the paper's model: slim's ResNet-v1-50
    # keras.applications' ResNet50: the only network whose convolutions have biases to fold into
    "resnet50_keras": Spec(ModelConfig(face=FaceNetConfig(backbone="resnet50_keras"), recurrent=SMALL_RNN),
                           InputConfig(modalities=("face",))),
}
EXPECTED_PAIRS = {"audio": 2, "resnet10": 12, "resnet50+audio": 55, "resnet50_keras": 53}


def randomize_batch_norms(model, seed=0):
    """Non-trivial statistics, so folding is actually exercised."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("moving_mean", "beta")):
            w.assign(rng.uniform(-0.2, 0.2, w.shape))
        elif w.path.endswith(("moving_variance", "gamma")):
            w.assign(rng.uniform(0.5, 1.5, w.shape))


def inputs(cfg, b=2, t=3, seed=1):
    return random_inputs(cfg, b, t, seed, audio_amplitude=0.5)


def features_and_outputs(model, x):
    """The fused features (before the LSTMs) and the outputs, inference mode."""
    layer = "fusion" if "fusion" in [lay.name for lay in model.layers] else model.layers[-6].name
    probe = keras.Model(model.inputs, {"features": model.get_layer(layer).output, **model.output})
    return {k: np.asarray(v, np.float32) for k, v in probe(x, training=False).items()}


@pytest.fixture(scope="module", params=list(CONFIGS))
def case(request):
    keras.utils.set_random_seed(0)
    cfg = CONFIGS[request.param]
    model = cfg.build()
    randomize_batch_norms(model)
    return request.param, cfg, model


@pytest.mark.parametrize("transform", [fold_batch_norms, optimize_for_inference])
def test_matches_unmodified_fp32_model(case, transform):
    name, cfg, model = case
    x = inputs(cfg)
    before = [w.numpy().copy() for w in model.weights]
    want = features_and_outputs(model, x)
    fast = transform(model)
    got = features_and_outputs(fast, x)
    for k in want:
        # The floor: slim's ResNet-50 (He init, statistics near 1) has features of order 1e4, whose
        # fp32 rounding reaches the LSTM outputs as a few 1e-6.
        scale = np.abs(want[k]).max()
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=1e-5 * scale + 1e-5, err_msg=f"{name}: {k}")
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.weights)), "original model modified"


def test_structure(case):
    name, _, model = case
    assert len(foldable_pairs(model)) == EXPECTED_PAIRS[name]
    fast = optimize_for_inference(model)

    def layers(m):
        for layer in m.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    kinds = [type(layer) for layer in layers(fast)]
    assert keras.layers.BatchNormalization not in kinds and FusedBatchNormalization not in kinds
    assert kinds.count(FoldedBatchNorm) == EXPECTED_PAIRS[name]
    assert kinds.count(PeepholeLSTM) == SMALL_RNN.layers or name == "resnet50+audio"
    assert keras.layers.RNN not in kinds
    assert fast.output_names == model.output_names


def test_mixed_bfloat16_close_to_fp32():
    """Under mixed_bfloat16 the optimized model stays as close to the fp32 model as the
    unmodified bf16 model does (bf16 has 8 significant bits)."""
    cfg = CONFIGS["resnet10"]
    keras.utils.set_random_seed(0)
    ref = cfg.build()
    randomize_batch_norms(ref)
    x = inputs(cfg)
    want = features_and_outputs(ref, x)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        bf16 = cfg.build()
        bf16.set_weights(ref.get_weights())
        base, fast = features_and_outputs(bf16, x), features_and_outputs(optimize_for_inference(bf16), x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for k in want:
        scale = np.abs(want[k]).max()
        err_base, err_fast = np.abs(base[k] - want[k]).max(), np.abs(fast[k] - want[k]).max()
        assert err_fast <= max(2 * err_base, 0.02 * scale), (k, err_base, err_fast, scale)


def test_save_and_reload(tmp_path):
    from emotion_e2e.models import load_model  # noqa: PLC0415

    cfg = CONFIGS["audio"]
    keras.utils.set_random_seed(0)
    model = cfg.build()
    randomize_batch_norms(model)
    fast = optimize_for_inference(model)
    path = str(tmp_path / "fast.keras")
    fast.save(path)
    x = inputs(cfg)
    want, got = fast(x, training=False), load_model(path)(x, training=False)
    for k in want:
        np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]))


def test_models_saved_with_the_rnn_cell_are_optimized_to_peephole_lstm():
    """A model of an earlier release holds ``RNN(PeepholeLSTMCell)``: optimize_for_inference
    turns it into ``PeepholeLSTM`` with the same weights and outputs."""
    rng = np.random.default_rng(0)
    x = keras.Input((None, 3), name="audio")
    y = keras.layers.RNN(PeepholeLSTMCell(4, cell_clip=1.0), return_sequences=True, name="lstm_1")(x)
    y = keras.layers.RNN(PeepholeLSTMCell(4, cell_clip=1.0), return_sequences=True, name="lstm_2")(y)
    old = keras.Model(x, keras.layers.Dense(1, name="head")(y))
    old.set_weights([rng.normal(scale=0.7, size=w.shape) for w in old.weights])
    fast = optimize_for_inference(old)
    assert [type(layer) for layer in fast.layers[1:3]] == [PeepholeLSTM, PeepholeLSTM]
    assert [layer.name for layer in fast.layers] == [layer.name for layer in old.layers]
    sequence = rng.normal(size=(2, 5, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(fast(sequence)), np.asarray(old(sequence)), atol=1e-5)


STREAM_CASES = {
    "peephole": (RecurrentConfig(layers=2, units=8), lambda m: m),
    "peephole, optimized": (RecurrentConfig(layers=2, units=8), optimize_for_inference),
    "standard": (RecurrentConfig(layers=2, units=8, cell="standard"), lambda m: m),
}


@pytest.mark.parametrize("case_name", list(STREAM_CASES))
def test_with_recurrent_state_in_chunks_equals_the_whole_sequence(case_name):
    rnn, transform = STREAM_CASES[case_name]
    cfg = Spec(ModelConfig(recurrent=rnn), InputConfig(modalities=("audio",)))
    keras.utils.set_random_seed(0)
    model = transform(cfg.build())
    stateful = with_recurrent_state(model)
    names = state_names(rnn.layers)
    assert names == ["h_1", "c_1", "h_2", "c_2"]
    x = inputs(cfg, b=2, t=7)["audio"]
    want = {k: np.asarray(v) for k, v in model({"audio": x}, training=False).items()}
    state = {n: np.zeros((2, rnn.units), np.float32) for n in names}
    chunks = []
    for start, stop in ((0, 3), (3, 4), (4, 7)):
        y = stateful({"audio": x[:, start:stop], **state}, training=False)
        assert sorted(y) == sorted([*cfg.label_names, *names])
        state = {n: np.asarray(y[n]) for n in names}
        chunks.append(y)
    for label in cfg.label_names:
        got = np.concatenate([np.asarray(c[label]) for c in chunks], axis=1)
        np.testing.assert_allclose(got, want[label], atol=1e-5, err_msg=f"{case_name}: {label}")
    # the per-frame network and the head are the model's own layers; only the LSTMs are copies
    assert {id(w) for w in model.get_layer("audio_network").weights} <= {id(w) for w in stateful.weights}
    assert len(stateful.weights) == len(model.weights)


def test_with_recurrent_state_of_a_model_without_lstm_is_the_model():
    cfg = Spec(ModelConfig(recurrent=RecurrentConfig(layers=0)), InputConfig(modalities=("audio",)))
    model = cfg.build()
    assert with_recurrent_state(model) is model
    assert state_names(0) == []
