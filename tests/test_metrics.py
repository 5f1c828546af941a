"""Streaming metrics give the whole-partition value however it is batched; NumPy functions."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import keras

from emotion_e2e.losses import CCCLoss, ccc
from emotion_e2e.metrics import (ConcordanceCorrelation, PearsonCorrelation, RootMeanSquaredError, ccc_np,
                                 pearson_np, rmse_np)

PAIRS = [(ConcordanceCorrelation, ccc_np), (PearsonCorrelation, pearson_np), (RootMeanSquaredError, rmse_np)]


def partition(seed, n=1000, offset=0.0, spread=1.0):
    """A long partition (float64), as gold/prediction of one dimension."""
    rng = np.random.default_rng(seed)
    gold = offset + spread * rng.normal(size=n)
    pred = 0.6 * (gold - offset) + offset + 0.1 * spread + 0.5 * spread * rng.normal(size=n)
    return gold, pred


def random_splits(rng, n):
    """A random partition of ``range(n)`` into consecutive batches of random sizes."""
    cuts = np.sort(rng.choice(np.arange(1, n), size=rng.integers(1, 30), replace=False))
    bounds = [0, *cuts, n]
    return list(zip(bounds[:-1], bounds[1:]))


def stream(metric, gold, pred, splits, mask=None):
    metric.reset_state()
    for a, b in splits:
        metric.update_state(gold[a:b], pred[a:b], None if mask is None else mask[a:b])
    return float(metric.result())


@pytest.mark.parametrize("cls,ref", PAIRS)
def test_any_batching_gives_the_partition_value(cls, ref):
    gold, pred = partition(0)
    rng = np.random.default_rng(1)
    metric = cls()
    expected = ref(gold, pred)
    values = [stream(metric, gold, pred, random_splits(rng, gold.size)) for _ in range(4)]
    values.append(stream(metric, gold, pred, [(0, gold.size)]))
    values.append(stream(metric, gold, pred, [(i, i + 1) for i in range(40)] + [(40, gold.size)]))  # single frames
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("cls,ref", PAIRS)
def test_masked_frames_are_left_out(cls, ref):
    gold, pred = partition(2)
    rng = np.random.default_rng(3)
    mask = (rng.random(gold.size) > 0.25).astype(np.float32)
    mask[100:300] = 0.0  # a whole batch may be padding only
    junk_pred = np.where(mask > 0, pred, 1e6)
    for _ in range(3):
        value = stream(cls(), gold, junk_pred, random_splits(rng, gold.size), mask)
        assert value == pytest.approx(ref(gold[mask > 0], pred[mask > 0]), abs=1e-9)


@pytest.mark.parametrize("cls,ref", PAIRS)
def test_batches_shaped_batch_by_time(cls, ref):
    """(batch, time) updates with a (batch, time) padding mask, as Keras passes them."""
    rng = np.random.default_rng(4)
    gold = rng.normal(size=(6, 2, 150)).astype(np.float32)
    pred = (0.5 * gold + rng.normal(size=gold.shape)).astype(np.float32)
    mask = np.ones(gold.shape, np.float32)
    mask[-1, 1, 40:] = 0.0
    metric = cls()
    for g, p, m in zip(gold, pred, mask):
        metric.update_state(tf.constant(g), tf.constant(p), sample_weight=tf.constant(m))
    assert float(metric.result()) == pytest.approx(ref(gold[mask > 0], pred[mask > 0]), abs=1e-9)


@pytest.mark.parametrize("cls,ref", PAIRS)
def test_large_offset_tiny_variance(cls, ref):
    """Values around 1e4 with spread 1e-3: raw sums of squares would lose every digit."""
    gold, pred = partition(5, n=3000, offset=1e4, spread=1e-3)
    rng = np.random.default_rng(6)
    expected = ref(gold, pred)
    for _ in range(3):
        value = stream(cls(), gold, pred, random_splits(rng, gold.size))
        assert value == pytest.approx(expected, rel=1e-6)


def test_reset_state():
    gold, pred = partition(7, n=200)
    metric = ConcordanceCorrelation()
    metric.update_state(gold * 3 + 1, pred)
    metric.reset_state()
    metric.update_state(gold, pred)
    assert float(metric.result()) == pytest.approx(ccc_np(gold, pred), abs=1e-12)
    metric.reset_state()
    assert np.isnan(float(metric.result()))


def test_inside_tf_function():
    gold, pred = partition(8, n=300)
    metric = PearsonCorrelation()

    @tf.function
    def update(g, p):
        metric.update_state(g, p)

    for a in range(0, 300, 64):
        update(tf.constant(gold[a:a + 64]), tf.constant(pred[a:a + 64]))
    assert float(metric.result()) == pytest.approx(pearson_np(gold, pred), abs=1e-9)


@pytest.mark.parametrize("cls", [ConcordanceCorrelation, PearsonCorrelation, RootMeanSquaredError])
def test_config_round_trip(cls):
    metric = cls(name="arousal_x")
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert type(again) is cls and again.name == "arousal_x"
    assert again.get_config() == metric.get_config()


def test_compiled_weighted_metrics_equal_numpy():
    """As training.py uses them: weighted_metrics per named output, the mask as sample_weight."""
    rng = np.random.default_rng(9)
    inp = keras.Input((None, 2))
    outs = {n: keras.layers.Reshape((-1,), name=n)(keras.layers.Dense(1)(inp)) for n in ("arousal", "valence")}
    model = keras.Model(inp, outs)
    model.compile(loss={n: CCCLoss() for n in outs},
                  weighted_metrics={n: [ConcordanceCorrelation(name="ccc"), RootMeanSquaredError(name="rmse")]
                                    for n in outs})
    x = rng.normal(size=(6, 20, 2)).astype(np.float32)
    y = {n: rng.normal(size=(6, 20)).astype(np.float32) for n in outs}
    mask = np.ones((6, 20), np.float32)
    mask[5, 7:] = 0.0
    ds = tf.data.Dataset.from_tensor_slices((x, y, {n: mask for n in outs})).batch(2)
    logs = model.evaluate(ds, verbose=0, return_dict=True)
    pred = model.predict(x, verbose=0)
    for n in outs:
        assert logs[f"{n}_ccc"] == pytest.approx(ccc_np(pred[n][mask > 0], y[n][mask > 0]), abs=1e-6)
        assert logs[f"{n}_rmse"] == pytest.approx(rmse_np(pred[n][mask > 0], y[n][mask > 0]), abs=1e-6)


def test_numpy_functions():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    assert ccc_np(x, x) == 1.0
    assert ccc_np(x, x + 1) == pytest.approx(2 * 1.25 / (2 * 1.25 + 1))  # population var 1.25
    assert pearson_np(x, 2 * x + 1) == pytest.approx(1.0)
    assert rmse_np(x, x + 0.5) == pytest.approx(0.5)
    assert np.isnan(pearson_np(x, np.ones(4))) and np.isnan(ccc_np(np.ones(3), np.ones(3)))
    assert np.isnan(rmse_np([], []))
    with pytest.raises(ValueError, match="Received: 4 and 3"):
        ccc_np(x, x[:3])


def test_agrees_with_audmetric():
    import audmetric  # the test extra pins it
    gold, pred = partition(10, n=2000, offset=0.2, spread=0.3)
    expected = audmetric.concordance_cc(gold, pred)
    assert ccc_np(pred, gold) == pytest.approx(expected, abs=1e-12)
    assert float(ccc(pred.astype(np.float32), gold.astype(np.float32))) == pytest.approx(expected, abs=1e-5)
    assert float(ccc(pred, gold)) == pytest.approx(expected, abs=1e-12)  # float64 in, float64 computed
    assert pearson_np(pred, gold) == pytest.approx(audmetric.pearson_cc(gold, pred), abs=1e-12)
    # audmetric's documented example.
    assert ccc_np([0, 1, 1], [0, 1, 2]) == pytest.approx(audmetric.concordance_cc([0, 1, 2], [0, 1, 1]), abs=1e-15)


_MIRRORED = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from emotion_e2e.losses import CCCLoss
from emotion_e2e.metrics import ConcordanceCorrelation, RootMeanSquaredError, ccc_np, rmse_np
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
assert strategy.num_replicas_in_sync == 2
rng = np.random.default_rng(0)
# Replicas see different offsets, so a mean of per-replica CCCs would differ from the pooled one.
g = rng.normal(size=(8, 20)); p = 0.5 * g + rng.normal(size=(8, 20)) + 3 * np.arange(8)[:, None] / 8
with strategy.scope():
    ccc_m, rmse_m = ConcordanceCorrelation(), RootMeanSquaredError()
ds = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((g, p)).batch(4))

@tf.function
def step(batch):
    def fn(a, b):
        ccc_m.update_state(a, b)
        rmse_m.update_state(a, b)
        return ccc_m.result()
    return strategy.run(fn, args=batch)

for batch in ds:
    inside = [float(v) for v in strategy.experimental_local_results(step(batch))]
assert np.allclose(inside, ccc_np(g, p), atol=1e-12), (inside, ccc_np(g, p))
assert abs(float(ccc_m.result()) - ccc_np(g, p)) < 1e-12
assert abs(float(rmse_m.result()) - rmse_np(g, p)) < 1e-12
ccc_m.reset_state()
assert np.isnan(float(ccc_m.result()))

with strategy.scope():
    inp = keras.Input((None, 2))
    outs = {n: keras.layers.Reshape((-1,), name=n)(keras.layers.Dense(1)(inp)) for n in ("a", "v")}
    model = keras.Model(inp, outs)
    model.compile(optimizer="adam", loss={n: CCCLoss() for n in outs}, loss_weights={n: 0.5 for n in outs},
                  weighted_metrics={n: [ConcordanceCorrelation(name="ccc")] for n in outs})
x = rng.normal(size=(8, 20, 2)).astype(np.float32)
y = {n: rng.normal(size=(8, 20)).astype(np.float32) for n in outs}
mask = np.ones((8, 20), np.float32); mask[7, 5:] = 0
data = tf.data.Dataset.from_tensor_slices((x, y, {n: mask for n in outs})).batch(4)
model.fit(data, epochs=1, verbose=0)
logs = model.evaluate(data, verbose=0, return_dict=True)
pred = model.predict(x, verbose=0)
for n in outs:
    assert abs(logs[n + "_ccc"] - ccc_np(pred[n][mask > 0], y[n][mask > 0])) < 1e-6, n
print("ok")
"""


def test_exact_under_a_two_replica_strategy():
    """Two logical CPU devices need a fresh process (they are fixed when TensorFlow starts)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-c", _MIRRORED], capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-3000:]
