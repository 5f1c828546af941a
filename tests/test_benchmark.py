"""The benchmark's own measurements: the figures they print are computed correctly."""

import sys

import numpy as np
import pytest

from emotion_e2e.benchmark import data, faces, media, models


def test_compare_resamplers_reports_figures():
    report = data.compare_resamplers(seconds=0.5)
    for method in ("scipy_resample_poly", "tfio_audio_resample"):
        for pair in ("44100->16000", "48000->16000"):
            fig = report[method][pair]
            assert fig["sec_per_audio_sec"] > 0 and fig["len_out"] == 8000
            assert fig["freq_err_hz"] < 0.1 and fig["amp_err"] < 0.01
    assert report["scipy_resample_poly"]["44100->16000"]["snr_db"] > 50


def test_peak_rss_is_the_commands_own_not_its_parents():
    parent = np.ones(400 * 2**20 // 8)  # this process holds 400 MB while the command runs
    child = "import numpy as np; x = np.ones(100 * 2**20 // 8)"
    peak = media.peak_rss_mb([sys.executable, "-c", child])
    assert 100 < peak < 300, peak  # the command's 100 MB and its interpreter, not this process's 400 MB
    del parent


def test_train_step_breakdown_splits_the_kernels_time_by_op_and_layer():
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e import losses  # noqa: PLC0415
    from emotion_e2e.config import InputConfig, ModelConfig, RecurrentConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model  # noqa: PLC0415

    inputs = InputConfig(modalities=("audio",))
    model = build_model(ModelConfig(recurrent=RecurrentConfig(layers=1, units=8)), inputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss={n: losses.CCCLoss() for n in inputs.label_names})
    rng = np.random.default_rng(0)
    x = {"audio": tf.constant(rng.uniform(-0.5, 0.5, (2, 10, 640)), tf.float32)}
    y = {n: tf.constant(rng.uniform(-1, 1, (2, 10)), tf.float32) for n in inputs.label_names}
    breakdown = models.train_step_breakdown(model, x, y, steps=2)
    ops, layers = dict(breakdown["by_op"]), dict(breakdown["by_layer"])
    assert all(ms > 0 for ms in ops.values()) and sum(ops.values()) == pytest.approx(sum(layers.values()))
    assert any("Conv" in op for op in ops)  # the audio network's convolutions, forward and backward
    assert {"forward audio_network", "backward audio_network", "forward lstm_1", "backward lstm_1"} <= set(layers)
    assert [ms for _, ms in breakdown["by_op"]] == sorted(ops.values(), reverse=True)


def test_convolution_rates_time_every_convolution_of_the_face_network_once_per_shape():
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.config import FaceNetConfig, InputConfig, ModelConfig, RecurrentConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model, feature_network  # noqa: PLC0415

    model = build_model(ModelConfig(face=FaceNetConfig(backbone="resnet10"), recurrent=RecurrentConfig(layers=0)),
                        InputConfig(modalities=("face",)))
    convs = [layer for layer in feature_network(model, "face").get_layer("backbone").layers
             if isinstance(layer, keras.layers.Conv2D)]
    rows = models.convolution_rates(model, frames=2, dtype=tf.float32, repeats=1)
    assert sum(count for _, count, _, _ in rows) == len(convs) == 12  # stem, 8 in the blocks, 3 projections
    assert len(rows) < len(convs)  # identical shapes are timed once
    # 3 × the forward FLOPs of every convolution, 2 per multiply-add
    want = sum(3 * 2 * np.prod(c.output.shape[1:]) * np.prod(c.kernel.shape[:-1]) * 2 for c in convs) / 1e9
    assert sum(gflop for _, _, gflop, _ in rows) == pytest.approx(want)
    assert all(seconds > 0 for *_, seconds in rows)
    assert [s for *_, s in rows] == sorted((s for *_, s in rows), reverse=True)
    assert rows[-1][0].count("×") >= 3  # "k×k/stride h×w×c→filters"


def test_the_install_size_of_mediapipe_counts_only_what_the_core_install_lacks():
    import importlib.metadata  # noqa: PLC0415

    core = faces.dependency_tree(["emotion_e2e"])
    assert {"tensorflow", "numpy", "opencv-python-headless", "protobuf"} <= core  # protobuf: TensorFlow's
    assert not {"mediapipe", "jax", "pytest"} & core  # extras are not followed
    added = faces.dependency_tree(["mediapipe"]) - core
    assert {"mediapipe", "jax", "jaxlib", "opencv-contrib-python"} <= added and "numpy" not in added
    files = importlib.metadata.distribution("jax").files
    assert faces.installed_bytes(["jax"]) == sum(f.locate().stat().st_size for f in files if f.locate().is_file())
    sizes = dict(faces.detector_install_sizes())
    assert sizes["yunet"].startswith("0.22 MB model file")
    assert f"in {len(added)} distributions" in sizes["mediapipe"]


def test_tracking_cost_finds_each_person_of_the_talk_and_the_panel_and_counts_full_detections(tmp_path):
    rows = faces.tracking_cost(1.0, str(tmp_path), detect_every=(1, 5))
    assert [(clip, every) for clip, _, every, *_ in rows] == [(c, e) for c in ("talk, 1 face", "panel, 3 faces")
                                                              for _ in ("yunet", "haar") for e in (1, 5)]
    for clip, _, every, ms, share, tracks in rows:
        assert tracks == (1 if clip.startswith("talk") else 3) and ms > 0
        assert share == (1.0 if every == 1 else 5 / 25)  # frames 1, 6, 11, 16, 21 of 25


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_lstm_seconds_times_the_models_lstm_stack_forward_and_backward(policy):
    import keras  # noqa: PLC0415

    from emotion_e2e.config import InputConfig, ModelConfig, RecurrentConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model  # noqa: PLC0415

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model(ModelConfig(recurrent=RecurrentConfig(layers=2, units=8)), InputConfig(modalities=("audio",)))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    forward, forward_backward = models.lstm_seconds(model, batch=2, frames=5, repeats=2)
    assert 0 < forward < 1 and 0 < forward_backward < 1
