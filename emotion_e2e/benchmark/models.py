"""The models suite: for the full-size models (audio-only, batch 2 × 150 frames; audio+face with
ResNet-50, batch 1 × 25 frames) inference and train step in fp32 and bf16, in rounds interleaved
with this machine's matmul peak: frames/s, × real time, % of the matmul peak measured in the same
round counting the model's FLOPs (medians over the rounds), the bf16 train step's speed-up over
fp32, and where each train step's time goes (``train_step_breakdown``: kernel time by op type
and by layer, forward and backward); for the audio model, its LSTM stack alone, forward and
forward + backward (``lstm_seconds``). "inf. opt." is inference of
``models.inference.optimize_for_inference(model)`` (batch norms folded into the convolutions,
LSTM input projections hoisted out of the recurrence; same outputs up to fp32 rounding)."""

from __future__ import annotations

import re
import tempfile
import time

import numpy as np
from absl import flags

_REPEATS = flags.DEFINE_integer("repeats", 3, "models: timed calls per model, mode and round (after a warm-up).")
_ROUNDS = flags.DEFINE_integer("rounds", 5, "models: rounds of peak and model timings, interleaved.")

def _best_seconds(call, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``call`` after a warm-up call."""
    call()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_peak(dtype, n=2048, repeats=10) -> float:
    """GFLOP/s of an ``n``×``n`` matmul chain, the best of ``repeats``."""
    import tensorflow as tf  # noqa: PLC0415

    a = tf.random.normal([n, n], dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)

    @tf.function
    def mm(x, y):
        return tf.reduce_sum(tf.cast(tf.linalg.matmul(x, y), tf.float32))

    return 2 * n ** 3 / _best_seconds(lambda: mm(a, b).numpy(), repeats) / 1e9


def model_flops(model, frames: int) -> float:
    """Forward FLOPs (2 per multiply-add) of convolutions, dense layers and LSTMs for ``frames``
    frames: per-frame networks count once per frame, recurrent layers once per time step."""
    import keras  # noqa: PLC0415

    from emotion_e2e.models.recurrent import PeepholeLSTM  # noqa: PLC0415

    def per_call(layer):
        if isinstance(layer, keras.Model):
            return sum(per_call(sub) for sub in layer.layers)
        if isinstance(layer, keras.layers.Conv1D | keras.layers.Conv2D):
            out = int(np.prod(layer.output.shape[1:]))  # per frame: (time or height, width, filters)
            return 2 * out * int(np.prod(layer.kernel.shape[:-1]))
        if isinstance(layer, keras.layers.Dense):
            return 2 * int(np.prod(layer.kernel.shape))
        if isinstance(layer, PeepholeLSTM | keras.layers.LSTM):
            cell = layer if isinstance(layer, PeepholeLSTM) else layer.cell
            return 2 * (int(np.prod(cell.kernel.shape)) + int(np.prod(cell.recurrent_kernel.shape)))
        return 0

    return frames * sum(per_call(layer) for layer in model.layers)


def time_model(model, inputs, labels, train: bool, repeats: int) -> float:
    """Seconds per call (inference) or per optimizer step (train), the median of ``repeats``.

    ``train_on_batch`` and ``predict_on_batch`` run Keras' compiled step functions."""
    call = (lambda: model.train_on_batch(inputs, labels)) if train else (lambda: model.predict_on_batch(inputs))
    return _median_seconds(call, repeats)


def _median_seconds(call, repeats: int) -> float:
    """Seconds of the median of ``repeats`` calls of ``call`` after a warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def lstm_seconds(model, batch: int, frames: int, repeats: int) -> tuple[float, float]:
    """The model's LSTM stack alone on ``(batch, frames, features)`` inputs in its compute dtype:
    seconds per forward pass and per forward and backward pass (gradients w.r.t. the input and
    every weight of the stack), medians of ``repeats`` calls."""
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.models.inference import recurrent_layers  # noqa: PLC0415

    lstms = recurrent_layers(model)
    x = tf.cast(tf.random.normal((batch, frames, lstms[0].input.shape[-1])), lstms[0].compute_dtype)
    weights = [w for layer in lstms for w in layer.trainable_weights]

    def forward(x):
        for layer in lstms:
            x = layer(x)
        return x

    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = forward(x)
        return tape.gradient(y, [x, *weights], output_gradients=tf.ones_like(y))

    forward = tf.function(forward)
    return (_median_seconds(lambda: forward(x).numpy(), repeats),
            _median_seconds(lambda: [g.numpy() for g in forward_backward(x)], repeats))


def train_step_breakdown(model, inputs, labels, steps: int = 3) -> dict:
    """Where a train step's time goes: TF's profiler traces ``steps`` calls of ``train_on_batch`` and
    the kernels' self time (summed over threads, per step) is grouped by op type and by the model's
    top-level layer, forward and backward apart (``"backward face_network"``; ``"other"``: the loss,
    metrics and optimizer). Returns ``{"by_op": [(name, ms), ...], "by_layer": [...]}``, largest first."""
    import collections  # noqa: PLC0415

    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.core.profiler.protobuf import xplane_pb2  # noqa: PLC0415

    model.train_on_batch(inputs, labels)  # traced and warm before the trace starts
    layers = {layer.name for layer in model.layers}
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(steps):
            model.train_on_batch(inputs, labels)
        tf.profiler.experimental.stop()
        (path,) = tf.io.gfile.glob(f"{logdir}/plugins/profile/*/*.xplane.pb")  # one trace: this one
        space = xplane_pb2.XSpace.FromString(tf.io.gfile.GFile(path, "rb").read())
    by_op, by_layer = collections.Counter(), collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name  # "scope/op_name:OpType" for a kernel
                if ":" not in name or "/" not in name:
                    continue
                op_name, op_type = name.rsplit(":", 1)
                ms = event.duration_ps / 1e9 / steps
                by_op[op_type.split("#")[0]] += ms
                layer = _top_layer(op_name, layers)
                by_layer[f"{'backward' if 'gradient_tape' in op_name else 'forward'} {layer}"] += ms
    return {"by_op": by_op.most_common(), "by_layer": by_layer.most_common()}


def _top_layer(op_name: str, layers: set[str]) -> str:
    """The model's top-level layer an op belongs to (TF scopes add ``_1``, ``_2`` to layer names), or "other"."""
    for part in op_name.split("/"):
        while True:
            if part in layers:
                return part
            shorter = re.sub(r"_\d+$", "", part)
            if shorter == part:
                break
            part = shorter
    return "other"


def _print_breakdown(breakdown: dict, top: int = 8):
    total = sum(ms for _, ms in breakdown["by_op"]) or 1.0
    for key, title in (("by_op", "op type"), ("by_layer", "layer")):
        rows = ", ".join(f"{name} {ms:,.0f} ms ({100 * ms / total:.0f} %)" for name, ms in breakdown[key][:top])
        print(f"    by {title}: {rows}")


def convolution_rates(model, frames: int, dtype, repeats: int = 5) -> list[tuple[str, int, float, float]]:
    """The face network's convolutions alone, each distinct one timed forward and backward
    (input and kernel gradients, as a train step computes them) on ``frames`` frames:
    ``[(description, count in the network, GFLOP, seconds per call of all of them)]``,
    slowest total first."""
    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    from emotion_e2e.models.model import feature_network  # noqa: PLC0415

    groups = {}
    for layer in feature_network(model, "face").get_layer("backbone").layers:
        if isinstance(layer, keras.layers.Conv2D):
            shape = tuple(layer.input.shape[1:])
            key = (shape, tuple(layer.kernel.shape), tuple(layer.strides), layer.padding)
            groups.setdefault(key, [layer, 0])[1] += 1
    rows = []
    for (shape, kernel_shape, strides, padding), (layer, count) in groups.items():
        x = tf.cast(tf.random.normal((frames, *shape)), dtype)
        kernel = tf.cast(tf.random.normal(kernel_shape, stddev=0.05), dtype)

        @tf.function
        def step(x, kernel, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = layer.convolution_op(x, kernel)
            return tape.gradient(y, [x, kernel], output_gradients=y)

        best = _best_seconds(lambda step=step, x=x, kernel=kernel: [g.numpy() for g in step(x, kernel)], repeats)
        out = layer.compute_output_shape((frames, *shape))
        flops = 3 * 2 * int(np.prod(out)) * int(np.prod(kernel_shape[:-1]))
        h, w, c = shape
        rows.append((f"{kernel_shape[0]}×{kernel_shape[1]}/{strides[0]} {h}×{w}×{c}→{out[-1]}", count,
                     count * flops / 1e9, count * best))
    return sorted(rows, key=lambda r: -r[3])


MODEL_MODES = ("inference", "train step", "inf. opt.")


def _model_pair(precision: str, modalities):
    """``(model, optimize_for_inference(model), label names)``, built under ``precision``'s
    policy and compiled with training's optimizer and loss."""
    import keras  # noqa: PLC0415

    from emotion_e2e import losses  # noqa: PLC0415
    from emotion_e2e.config import InputConfig, ModelConfig  # noqa: PLC0415
    from emotion_e2e.models import build_model  # noqa: PLC0415
    from emotion_e2e.models.inference import optimize_for_inference  # noqa: PLC0415
    from emotion_e2e.models.kernels import FusedAdam  # noqa: PLC0415

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")
    try:
        inputs = InputConfig(modalities=modalities)
        model = build_model(ModelConfig(), inputs)
        model.compile(optimizer=FusedAdam(1e-4), loss={n: losses.CCCLoss() for n in inputs.label_names})
        fast = optimize_for_inference(model)
        fast.compile()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, fast, inputs.label_names


def models_suite():
    """Rounds of (matmul peak, then every mode of the model) per precision, interleaved, so each
    figure is a median over rounds and each "% of peak" is a step against the peak measured
    next to it: on a shared machine both drift by ±30 % within minutes."""
    import tensorflow as tf  # noqa: PLC0415

    dtypes = {"fp32": tf.float32, "bf16": tf.bfloat16}
    try:
        matmul_peak(tf.bfloat16, repeats=1)
    except (tf.errors.OpError, ValueError) as e:  # no bf16 matmul kernel on this CPU
        print(f"bf16 matmul unavailable: {e}")
        del dtypes["bf16"]
    cases = [("audio", ("audio",), 2, 150), ("audio+face (ResNet-50)", ("audio", "face"), 1, 25)]
    for name, modalities, batch, frames in cases:
        models = {p: _model_pair(p, modalities) for p in dtypes}
        labels = models["fp32"][2]
        rng = np.random.default_rng(0)
        x = {}
        if "audio" in modalities:
            x["audio"] = tf.constant(rng.uniform(-0.5, 0.5, (batch, frames, 640)), tf.float32)
        if "face" in modalities:
            x["face"] = tf.constant(rng.uniform(0, 1, (batch, frames, 96, 96, 3)), tf.float32)
        y = {n: tf.constant(rng.uniform(-1, 1, (batch, frames)), tf.float32) for n in labels}
        flops = model_flops(models["fp32"][0], batch * frames)
        peaks = {p: [] for p in dtypes}
        seconds = {(p, mode): [] for p in dtypes for mode in MODEL_MODES}
        for _ in range(_ROUNDS.value):
            for p, dtype in dtypes.items():
                peaks[p].append(matmul_peak(dtype, repeats=3))
                model, fast, _ = models[p]
                for mode in MODEL_MODES:
                    seconds[p, mode].append(time_model(fast if mode == "inf. opt." else model, x, y,
                                                       mode == "train step", _REPEATS.value))
        print(f"\n{name}, batch {batch} × {frames}, {_ROUNDS.value} rounds; matmul peak (2048×2048): "
              + ", ".join(f"{p} {np.median(v):,.0f} GFLOP/s ({min(v):,.0f}–{max(v):,.0f})" for p, v in peaks.items()))
        print(f"{'precision':<10}{'mode':<11}{'frames/s':>10}{'× real time':>13}{'GFLOP/s':>10}{'% of peak':>11}")
        for p in dtypes:
            for mode in MODEL_MODES:
                work = flops * (3 if mode == "train step" else 1)  # backward ≈ 2 × forward
                t = np.array(seconds[p, mode])
                fps = batch * frames / np.median(t)
                share = np.median(100 * work / t / 1e9 / np.array(peaks[p]))  # each round against its own peak
                print(f"{p:<10}{mode:<11}{fps:>10,.0f}{fps * 0.04:>13,.1f}{work / np.median(t) / 1e9:>10,.0f}"
                      f"{share:>10.0f}%")
        for p, dtype in dtypes.items():
            if "face" in modalities:
                rows = convolution_rates(models[p][0], batch * frames, dtype)
                gflop, total = sum(r[2] for r in rows), sum(r[3] for r in rows)
                print(f"{p} face-network convolutions alone, forward and backward: {gflop / total:,.0f} GFLOP/s, "
                      f"{100 * gflop / total / np.median(peaks[p]):.0f} % of the median peak; the slowest: "
                      + ", ".join(f"{d} ×{n} {g / t:,.0f}" for d, n, g, t in rows[:5]))
        if "face" not in modalities:
            for p in dtypes:
                fwd, fwd_bwd = lstm_seconds(models[p][0], batch, frames, _ROUNDS.value * _REPEATS.value)
                print(f"{p} LSTM stack alone: forward {fwd * 1e3:,.1f} ms, "
                      f"forward and backward {fwd_bwd * 1e3:,.1f} ms")
        if "bf16" in dtypes:
            ratio = np.array(seconds["fp32", "train step"]) / np.array(seconds["bf16", "train step"])
            print(f"bf16 train step speed-up over fp32: {np.median(ratio):.2f}× (rounds: "
                  + ", ".join(f"{r:.2f}" for r in ratio) + ")")
        for p in dtypes:  # kernel self time per step, summed over threads
            print(f"  {p} train step, where the time goes:")
            _print_breakdown(train_step_breakdown(models[p][0], x, y))
