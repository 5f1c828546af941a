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
  in [0, 1], those the model reads) and ``outputs`` (batch, time, 2): arousal, valence.

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


def video_model(video, batch, time):
    """(B, T, 96, 96, 3) → (B, T, 2048)."""
    with tf.variable_scope("video_model"):
        net = tf.reshape(video, (-1, FACE, FACE, 3))
        net, _ = resnet_v1.resnet_v1_50(net, None, is_training=False)
        return tf.reshape(net, (batch, time, VIDEO_FEATURES))


def build(modalities):
    """The placeholders ``{modality: tensor}`` and the outputs (B, T, 2)."""
    inputs = {"audio": tf.placeholder(tf.float32, (None, None, SAMPLES), name="audio"),
              "video": tf.placeholder(tf.float32, (None, None, FACE, FACE, 3), name="video")}
    shape = tf.shape(inputs[modalities[0]])
    features = []
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
        with slim.arg_scope([slim.batch_norm, slim.dropout], is_training=False):
            if "audio" in modalities:
                features.append(audio_model(inputs["audio"], shape[0], shape[1]))
            if "video" in modalities:
                features.append(video_model(inputs["video"], shape[0], shape[1]))
    net = tf.concat(features, axis=2)
    # LSTMCell's default initializer, Glorot-uniform, but TF's own: it draws from the graph's seed,
    # where tf-keras' default draws an unseeded one and the reference would change from run to run.
    cell = tf.nn.rnn_cell.MultiRNNCell([tf.nn.rnn_cell.LSTMCell(UNITS, use_peepholes=True, cell_clip=CELL_CLIP,
                                                                initializer=tf.glorot_uniform_initializer())
                                        for _ in range(LAYERS)])
    net, _ = tf.nn.dynamic_rnn(cell, net, dtype=tf.float32)
    outputs = slim.layers.linear(net, OUTPUTS)
    return {m: inputs[m] for m in modalities}, outputs


def randomise(sess, rng):
    """Random values for what initialisers set to constants: batch-norm offsets and scales, LSTM
    and head biases. Kernels keep their random initial values."""
    ranges = {"beta": (-0.5, 0.5), "gamma": (0.5, 1.5), "bias": (-0.5, 0.5), "biases": (-0.5, 0.5)}
    for var in tf.global_variables():
        leaf = var.op.name.rsplit("/", 1)[-1]
        if leaf in ranges:
            var.load(rng.uniform(*ranges[leaf], var.shape.as_list()).astype(np.float32), sess)


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
        for name, value in (("moving_mean", mean + rng.uniform(-0.5, 0.5, mean.shape) * std),
                            ("moving_variance", std ** 2 * rng.uniform(0.5, 2.0, std.shape))):
            variables[f"{scope}/{name}"].load(value.astype(np.float32), sess)


def write_reference(name, modalities, out_dir, rng):
    path = os.path.join(out_dir, name)
    os.makedirs(path)
    with tf.Graph().as_default():
        tf.set_random_seed(SEED)
        placeholders, outputs = build(modalities)
        if name == "audio":  # what a training checkpoint holds beside the model
            step = tf.train.get_or_create_global_step()
            tf.train.AdamOptimizer().minimize(tf.reduce_mean(outputs), global_step=step)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            randomise(sess, rng)
            inputs = {"audio": rng.uniform(-1, 1, (BATCH, FRAMES, SAMPLES)).astype(np.float32),
                      "video": rng.uniform(0, 1, (BATCH, FRAMES, FACE, FACE, 3)).astype(np.float32)}
            feed = {placeholders[m]: inputs[m] for m in modalities}
            random_statistics(sess, feed, rng)
            y = sess.run(outputs, feed)
            tf.train.Saver().save(sess, os.path.join(path, "model.ckpt"), global_step=0, write_meta_graph=False)
    np.savez(os.path.join(path, "reference.npz"), outputs=y, **{m: inputs[m] for m in modalities})


def main(out_dir):
    tf.disable_eager_execution()
    rng = np.random.default_rng(SEED)
    for name, modalities in MODELS.items():
        write_reference(name, modalities, out_dir, rng)


if __name__ == "__main__":
    main(sys.argv[1])
