r"""The authors' TF1 graph, rebuilt in graph mode with TF-slim: the reference that
``emotion_e2e.import_tf1`` is tested against (docs/design.md §11).

  TF_USE_LEGACY_KERAS=1 python tests/tf1ref/reference_graph.py OUT_DIR

For each of the authors' models (their ``--model=audio|video|both``) it builds the graph under
``resnet_arg_scope()`` in inference mode (batch norms on their moving statistics, dropout off),
draws random weights and random batch-norm statistics (around the moments each batch norm sees
on the inputs, ``random_statistics``), and writes to ``OUT_DIR/<model>/``:

- ``model.ckpt-0``: the checkpoint, saved by ``tf.compat.v1.train.Saver``. The audio graph also
  holds what a training checkpoint of theirs holds beside the model (``global_step`` and Adam's
  slots and beta powers), which the import ignores.
- ``reference.npz``: the inputs (``audio`` (batch, time, 640), ``video`` (batch, time, 96, 96, 3)
  in [0, 1], those the model reads, drawn as ``video_uint8`` crops divided by 255) and
  ``outputs`` (batch, time, 2): arousal, valence.

Two more cases:

- ``clip/``: the audio graph on ``CLIP_FRAMES`` frames, half the cells of the first LSTM driven
  to add ±1 to their state at every frame (``drive_past_clip``), so the state reaches the clip
  of ±100; ``reference.npz`` also holds ``final_c`` (the first LSTM's last cell state) and
  ``unclipped`` (the outputs of the same weights with ``cell_clip=None``).
- ``<graph>/training_<dtype>.npz`` for each ``(graph, dtype)`` of ``TRAINED``: up to three
  training steps from the weights of ``<graph>/model.ckpt-0`` on one batch, as the authors'
  ``emotion_train.py`` builds them, in that dtype (``write_training_reference``): the inputs and
  ``labels``, ``loss`` (one per step), and for the steps ``TRAINED`` lists by kind
  ``grad<k>/<variable>`` (the gradient of step k), ``weights<k>/<variable>`` (each trained
  variable after step k) and ``moving<k>/<variable>`` (each moving statistic after step k). In
  float64 the graph is the same function without float32's rounding: ResNet-50's gradients in
  training mode are not resolved in float32 (docs/design.md §11).

The graph, as their code builds it:

- audio (``audio_model``): (B, T, 640) → (B·T, 1, 640, 1) → dropout → conv 40 × (1, 20) →
  max-pool (1, 2) → conv 40 × (1, 40) → (B·T, 320, 40, 1) → max-pool (1, 10) across channels →
  (B, T, 1280). Every slim conv2d under ``resnet_arg_scope`` has batch norm and ReLU, no bias.
- video (``video_model``): (B, T, 96, 96, 3) → (B·T, 96, 96, 3) → ``resnet_v1_50(x, None)`` →
  (B, T, 2048).
- both: the two concatenated, audio first; then ``MultiRNNCell`` of two ``LSTMCell(256,
  use_peepholes=True, cell_clip=100)`` through ``dynamic_rnn``, and ``slim.layers.linear(net, 2)``.

Slim imports ``tf_keras.legacy_tf_layers.*``, which tf-keras 2.16 ships as
``tf_keras.src.legacy_tf_layers.*``: the modules are aliased before tf_slim is imported.
"""

import importlib
import os
import sys

import numpy as np

for _module in ("base", "convolutional", "core", "normalization", "pooling", "variable_scope_shim"):
    sys.modules[f"tf_keras.legacy_tf_layers.{_module}"] = importlib.import_module(
        f"tf_keras.src.legacy_tf_layers.{_module}")

import tensorflow.compat.v1 as tf  # noqa: E402
import tf_slim as slim  # noqa: E402
from tensorflow.python.autograph.core import ag_ctx  # noqa: E402
from tf_slim.nets import resnet_v1  # noqa: E402

MODELS = {"audio": ("audio",), "video": ("video",), "both": ("audio", "video")}
BATCH, FRAMES = 2, 4
SAMPLES, FACE = 640, 96
CONV1, CONV2, POOL, CHANNEL_POOL = (40, 20), (40, 40), 2, 10
AUDIO_FEATURES = SAMPLES // POOL * CONV2[0] // CHANNEL_POOL  # 1280
VIDEO_FEATURES = 2048
KEEP_PROB = 0.5
UNITS, LAYERS, CELL_CLIP = 256, 2, 100.0
OUTPUTS = 2  # arousal, valence
SEED = 7
# A cell state moves by at most 1 a frame (|i · tanh(j)| <= 1): passing the clip takes more
# than CELL_CLIP frames.
CLIP_FRAMES = 120
# drive_past_clip: the gates' bias that saturates them, and how much of their input weights and
# peepholes the driven cells keep (the output peephole keeps the clipped state visible).
SATURATING_BIAS = 8.0
DRIVEN_INPUT_SCALE, DRIVEN_PEEPHOLE_SCALE, DRIVEN_OUTPUT_PEEPHOLE_SCALE = 0.1, 0.01, 0.2
# The authors' training: Adam 1e-4 (TF1's epsilon 1e-8).
LEARNING_RATE = 1e-4
ADAM_DEFAULTS = (0.9, 0.999, 1e-8)  # TF1's AdamOptimizer's β₁, β₂ and ε, which their code keeps
# The training references, (graph, dtype): {kind: the steps after which it is written}; each
# runs up to the last of them. Kinds: "grad" (every gradient), "weights" (every trained
# variable), "moving" (every moving statistic). float32 is what training runs in; in float64
# every gradient of the multimodal graph is compared. ResNet-50's variables are large (23.5 M):
# the multimodal graph writes what its test compares.
TRAINED = {("audio", "float32"): {"grad": (1, 3), "weights": (1, 3), "moving": (1, 3)},
           ("both", "float32"): {"moving": (1,)},
           ("both", "float64"): {"grad": (1,), "weights": (3,), "moving": (3,)}}


def audio_model(audio, batch, time):
    """(B, T, 640) → (B, T, 1280)."""
    with tf.variable_scope("audio_model"):
        net = tf.reshape(audio, (-1, 1, SAMPLES, 1))
        net = slim.dropout(net, KEEP_PROB)
        net = slim.conv2d(net, CONV1[0], (1, CONV1[1]), padding="SAME")
        net = tf.nn.max_pool(net, [1, 1, POOL, 1], [1, 1, POOL, 1], padding="SAME")
        net = slim.conv2d(net, CONV2[0], (1, CONV2[1]), padding="SAME")
        net = tf.reshape(net, (-1, SAMPLES // POOL, CONV2[0], 1))
        net = tf.nn.max_pool(net, [1, 1, CHANNEL_POOL, 1], [1, 1, CHANNEL_POOL, 1], padding="SAME")
        return tf.reshape(net, (batch, time, AUDIO_FEATURES))


def video_model(video, batch, time, training=False):
    """(B, T, 96, 96, 3) → (B, T, 2048)."""
    with tf.variable_scope("video_model"):
        net = tf.reshape(video, (-1, FACE, FACE, 3))
        net, _ = resnet_v1.resnet_v1_50(net, None, is_training=training)
        return tf.reshape(net, (batch, time, VIDEO_FEATURES))


def build(modalities, training=False, cell_clip=CELL_CLIP, dtype=tf.float32):
    """The placeholders ``{modality: tensor}``, the outputs (B, T, 2) and the first LSTM's last
    cell state (B, 256).

    ``training``: batch norms on the batch's moments, updating their moving statistics (the
    update ops in ``UPDATE_OPS``), as the authors train. Their batch norm is TF ≤ 0.12's slim
    one, which had no fused kernel: its moments are ``nn.moments``', the biased batch variance
    fed to the moving average too, hence ``fused=False`` (the fused kernel feeds the unbiased
    one). Dropout stays off: the tests apply one fixed dropout mask to the audio they feed, the
    same function of the weights as a dropout on the input. ``dtype``: of the inputs, every
    variable and every computation (slim's layers and the LSTMs take their inputs')."""
    inputs = {"audio": tf.placeholder(dtype, (None, None, SAMPLES), name="audio"),
              "video": tf.placeholder(dtype, (None, None, FACE, FACE, 3), name="video")}
    shape = tf.shape(inputs[modalities[0]])
    features = []
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        with slim.arg_scope([slim.batch_norm], is_training=training, fused=False if training else None), \
                slim.arg_scope([slim.dropout], is_training=False):
            if "audio" in modalities:
                features.append(audio_model(inputs["audio"], shape[0], shape[1]))
            if "video" in modalities:
                features.append(video_model(inputs["video"], shape[0], shape[1], training))
    net = tf.concat(features, axis=2)
    # LSTMCell's default initializer, Glorot-uniform, but TF's own: it draws from the graph's seed,
    # where tf-keras' default draws an unseeded one and the reference would change from run to run.
    cell = tf.nn.rnn_cell.MultiRNNCell([tf.nn.rnn_cell.LSTMCell(UNITS, use_peepholes=True, cell_clip=cell_clip,
                                                                initializer=tf.glorot_uniform_initializer(dtype=dtype))
                                        for _ in range(LAYERS)])
    net, state = tf.nn.dynamic_rnn(cell, net, dtype=dtype)
    outputs = slim.layers.linear(net, OUTPUTS)
    return {m: inputs[m] for m in modalities}, outputs, state[0].c


def load(sess, values):
    """Sets each variable of ``values`` (``(variable, array)`` pairs) in one run (``Variable.load``
    runs once per variable, a tenth of a second each in a ResNet-50 graph)."""
    values = list(values)  # each variable's initializer fed the value, as Variable.load does
    sess.run([v.initializer for v, _ in values], {v.initializer.inputs[1]: value for v, value in values})


def randomise(sess, rng):
    """Random values for what initialisers set to constants: batch-norm offsets and scales, LSTM
    and head biases. Kernels keep their random initial values."""
    ranges = {"beta": (-0.5, 0.5), "gamma": (0.5, 1.5), "bias": (-0.5, 0.5), "biases": (-0.5, 0.5)}
    leaves = [(var, var.op.name.rsplit("/", 1)[-1]) for var in tf.global_variables()]
    load(sess, [(var, rng.uniform(*ranges[leaf], var.shape.as_list()).astype(np.float32))
                for var, leaf in leaves if leaf in ranges])


def random_statistics(sess, feed, rng):
    """Random moving statistics for every batch norm, drawn around the moments of what it sees
    on ``feed``, as a trained network's are: mean μ + U(±σ/2), variance σ² · U(0.5, 2), one batch
    norm after the other in the graph's order. Statistics drawn blindly let ResNet-50's
    activations grow to hundreds, which saturates the LSTM gates: the outputs would then hardly
    depend on the face network, nor a test on its mapping."""
    variables = {v.op.name: v for v in tf.global_variables()}
    for op in tf.get_default_graph().get_operations():
        if op.type not in ("FusedBatchNorm", "FusedBatchNormV3"):  # not their gradients
            continue
        scope = op.name.rsplit("/", 1)[0]
        z = sess.run(op.inputs[0], feed)
        mean, std = z.mean(axis=(0, 1, 2)), z.std(axis=(0, 1, 2))
        load(sess, [(variables[f"{scope}/{name}"], value.astype(np.float32))
                    for name, value in (("moving_mean", mean + rng.uniform(-0.5, 0.5, mean.shape) * std),
                                        ("moving_variance", std ** 2 * rng.uniform(0.5, 2.0, std.shape)))])


def draw_inputs(rng, frames=FRAMES):
    """``{'audio': (B, T, 640) in [-1, 1], 'video_uint8': (B, T, 96, 96, 3), 'video': the same / 255}``."""
    video = rng.integers(0, 256, (BATCH, frames, FACE, FACE, 3), dtype=np.uint8)
    return {"audio": rng.uniform(-1, 1, (BATCH, frames, SAMPLES)).astype(np.float32),
            "video_uint8": video, "video": (video / np.float32(255)).astype(np.float32)}


def lstm_variables(k=0):
    """``{leaf: variable}`` of the ``k``-th LSTM (kernel, bias, w_i_diag, w_f_diag, w_o_diag)."""
    prefix = f"rnn/multi_rnn_cell/cell_{k}/lstm_cell/"
    return {v.op.name[len(prefix):]: v for v in tf.global_variables() if v.op.name.startswith(prefix)}


def drive_past_clip(sess):
    """Drives the first half of the first LSTM's cells to add ±1 to their state at every frame,
    whatever the input: the input and forget gates open and the candidate saturated by
    ``SATURATING_BIAS`` (alternating signs), their input weights and input and forget
    peepholes scaled down; the output peephole scaled down too, so that the output gate still
    reads the clipped state instead of saturating on it. The other cells keep their weights."""
    lstm = lstm_variables()
    driven = np.arange(UNITS // 2)
    i, j, f, o = (gate * UNITS + driven for gate in range(4))  # TF1's gate order
    kernel, bias = sess.run(lstm["kernel"]), sess.run(lstm["bias"])
    kernel[:, np.concatenate([i, j, f])] *= DRIVEN_INPUT_SCALE
    bias[i], bias[f] = SATURATING_BIAS, SATURATING_BIAS
    bias[j] = SATURATING_BIAS * np.where(driven % 2, -1.0, 1.0)
    values = [(lstm["kernel"], kernel), (lstm["bias"], bias)]
    for name, scale in (("w_i_diag", DRIVEN_PEEPHOLE_SCALE), ("w_f_diag", DRIVEN_PEEPHOLE_SCALE),
                        ("w_o_diag", DRIVEN_OUTPUT_PEEPHOLE_SCALE)):
        value = sess.run(lstm[name])
        value[driven] *= scale
        values.append((lstm[name], value))
    load(sess, values)


def write_reference(name, modalities, out_dir, rng, frames=FRAMES, prepare=None):
    """``out_dir/<name>/``: the checkpoint and ``reference.npz`` of the inference graph of
    ``modalities`` on ``frames`` frames; ``prepare(sess)`` changes the weights last. Returns the
    checkpoint's path and the feed."""
    path = os.path.join(out_dir, name)
    os.makedirs(path)
    with tf.Graph().as_default():
        tf.set_random_seed(SEED)
        placeholders, outputs, final_c = build(modalities)
        if name == "audio":  # what a training checkpoint holds beside the model
            step = tf.train.get_or_create_global_step()
            tf.train.AdamOptimizer().minimize(tf.reduce_mean(outputs), global_step=step)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            randomise(sess, rng)
            inputs = draw_inputs(rng, frames)
            feed = {placeholders[m]: inputs[m] for m in modalities}
            random_statistics(sess, feed, rng)
            if prepare:
                prepare(sess)
            y, c = sess.run([outputs, final_c], feed)
            ckpt = tf.train.Saver().save(sess, os.path.join(path, "model.ckpt"), global_step=0,
                                         write_meta_graph=False)
    saved = {"outputs": y, "final_c": c, **{m: inputs[m] for m in modalities}}
    if "video" in modalities:
        saved["video_uint8"] = inputs["video_uint8"]
    if prepare:  # the same weights without the clip: what the clip changes
        saved["unclipped"] = run_restored(ckpt, modalities, {m: inputs[m] for m in modalities}, cell_clip=None)
    np.savez(os.path.join(path, "reference.npz"), **saved)
    return ckpt


def run_restored(ckpt, modalities, inputs, cell_clip):
    """The inference graph's outputs with ``cell_clip``, from the weights of ``ckpt``."""
    with tf.Graph().as_default():
        placeholders, outputs, _ = build(modalities, cell_clip=cell_clip)
        with tf.Session() as sess:
            tf.train.Saver().restore(sess, ckpt)
            return sess.run(outputs, {placeholders[m]: inputs[m] for m in modalities})


def concordance_cc(prediction, ground_truth):
    """The authors' loss of one dimension, as their losses.py computes it: ``1 − CCC`` with
    ``tf.nn.moments``' population statistics."""
    pred_mean, pred_var = tf.nn.moments(prediction, (0,))
    gt_mean, gt_var = tf.nn.moments(ground_truth, (0,))
    mean_cent_prod = tf.reduce_mean((prediction - pred_mean) * (ground_truth - gt_mean))
    return 1 - (2 * mean_cent_prod) / (pred_var + gt_var + tf.square(pred_mean - gt_mean))


def write_training_reference(ckpt, modalities, path, rng, written, dtype):
    """``path``: training steps in ``dtype`` from the weights of ``ckpt`` on one
    batch, as the authors' emotion_train.py builds them: batch norms in training mode under
    ``resnet_arg_scope``, each dimension's ``1 − CCC`` over the batch's values added as a loss
    divided by the number of dimensions, slim's total loss (with the ``l2_regularizer(1e-4)``
    of every convolution, which ``resnet_arg_scope`` collects), Adam, and slim's
    ``create_train_op`` (which runs the moving-average updates with the step). The audio fed
    is the drawn audio times one dropout mask of keep probability ``KEEP_PROB``, divided by it:
    their input dropout with that mask. ``written``: ``{kind: steps}``, what is written after
    which step (``TRAINED``)."""
    with tf.Graph().as_default():
        placeholders, outputs, _ = build(modalities, training=True, dtype=tf.as_dtype(dtype))
        labels = tf.placeholder(dtype, (None, None, OUTPUTS), name="labels")
        for i in range(OUTPUTS):
            loss = concordance_cc(tf.reshape(outputs[:, :, i], (-1,)), tf.reshape(labels[:, :, i], (-1,)))
            slim.losses.add_loss(loss / OUTPUTS)
        total_loss = slim.losses.get_total_loss()
        captured = []

        def capture(grads_and_vars):
            captured.extend(grads_and_vars)
            return grads_and_vars

        # Given as tensors of ``dtype``: given as numbers, TF1's Adam keeps them and its β powers in
        # float32 whatever the variables' dtype.
        optimizer = tf.train.AdamOptimizer(*(tf.constant(x, dtype) for x in (LEARNING_RATE, *ADAM_DEFAULTS)))
        train_op = slim.training.create_train_op(total_loss, optimizer, transform_grads_fn=capture)
        model_variables = {"weights": tf.trainable_variables(),
                           "moving": [v for v in tf.global_variables() if "/moving_" in v.op.name]}
        inputs = draw_inputs(rng)
        mask = rng.random(inputs["audio"].shape) < KEEP_PROB
        inputs["audio"] = inputs["audio"] * mask / np.float32(KEEP_PROB)
        inputs = {m: inputs[m].astype(dtype) for m in ("audio", "video")}
        targets = rng.uniform(-1, 1, (BATCH, FRAMES, OUTPUTS)).astype(dtype)
        feed = {labels: targets, **{placeholders[m]: inputs[m] for m in modalities}}
        saved = {"labels": targets, **inputs}
        losses = []
        reader = tf.train.load_checkpoint(ckpt)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            load(sess, [(v, reader.get_tensor(v.op.name).astype(dtype))  # in dtype: not Saver.restore
                        for v in model_variables["weights"] + model_variables["moving"]])
            for step in range(1, max(max(steps) for steps in written.values()) + 1):
                loss, grads = sess.run([train_op, [g for g, _ in captured]], feed)
                losses.append(loss)
                if step in written.get("grad", ()):
                    saved.update({f"grad{step}/{v.op.name}": g for g, (_, v) in zip(grads, captured)})
                for kind in ("weights", "moving"):
                    if step in written.get(kind, ()):
                        values = sess.run(model_variables[kind])
                        saved.update({f"{kind}{step}/{v.op.name}": x for v, x in zip(model_variables[kind], values)})
    np.savez(path, loss=np.array(losses), **saved)


def main(out_dir):
    tf.disable_eager_execution()
    # tf-keras converts the call of every layer it takes for a user's subclass with AutoGraph, at
    # every call: slim's layers, whose module is not keras.layers (see the aliases above), 0.5 s a
    # batch norm. They branch on Python values only, which need no conversion.
    with ag_ctx.ControlStatusCtx(status=ag_ctx.Status.DISABLED):
        write_all(out_dir)


def write_all(out_dir):
    rng = np.random.default_rng(SEED)
    checkpoints = {name: write_reference(name, modalities, out_dir, rng) for name, modalities in MODELS.items()}
    for (name, dtype), written in TRAINED.items():
        write_training_reference(checkpoints[name], MODELS[name], os.path.join(out_dir, name, f"training_{dtype}.npz"),
                                 rng, written, dtype)
    write_reference("clip", MODELS["audio"], out_dir, rng, frames=CLIP_FRAMES, prepare=drive_past_clip)


if __name__ == "__main__":
    main(sys.argv[1])
