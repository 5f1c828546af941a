"""Inference-only model transformations (``optimize_for_inference``): batch-norm folding,
every ``Conv → BatchNormalization`` pair becomes one convolution with a bias; and, in models
saved with ``RNN(PeepholeLSTMCell)``, the LSTMs replaced by ``PeepholeLSTM`` (the input
projection computed for all time steps before the recurrence), what ``build_model`` builds now.
``with_recurrent_state`` exposes the LSTMs' state as inputs and outputs, so a server can
follow a stream chunk by chunk (the ``stream`` signature of ``emotion_e2e.export``).

In inference mode a batch norm is a per-channel affine map of its input,

    bn(z) = γ · (z − μ) / √(σ² + ε) + β,

so after ``z = conv(x, W) + b`` it folds exactly (up to fp32 rounding) into the conv:
``W' = W · s`` (per output channel) and ``b' = (b − μ) · s + β`` with ``s = γ / √(σ² + ε)``.

Folding drops ResNet-50's 53 batch-norm kernels and lets oneDNN fuse conv + bias + ReLU
into one kernel. (A Keras BatchNormalization, as in models saved before
``FusedBatchNormalization``, also upcasts its bf16 input to float32 and casts the result
back: two memory-bound passes per layer that folding removes too.)

``RNN(PeepholeLSTMCell)`` reads (and under ``mixed_bfloat16`` casts) the 3328×1024 input
kernel and multiplies it with one frame at every time step; ``PeepholeLSTM`` does one
(time×3328)·(3328×1024) matmul instead.

The transformed model is for inference only (no batch norm left to train); it takes the same
inputs and returns the same outputs as the original, whose weights are not changed.
"""

from __future__ import annotations

import keras
import numpy as np

from emotion_e2e.models.layers import PACKAGE
from emotion_e2e.models.recurrent import PeepholeLSTM, PeepholeLSTMCell

CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldedBatchNorm(keras.layers.Layer):
    """What is left of a batch norm folded into its convolution: the identity. It keeps the
    batch norm's name and call signature (Keras records ``mask`` in the graph)."""

    def call(self, inputs, mask=None):  # noqa: ARG002 - BatchNormalization's signature
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _producer(layer):
    """The layer whose output is ``layer``'s only input, or None (several inputs, or
    a layer called more than once)."""
    nodes = layer._inbound_nodes  # noqa: SLF001 - Keras has no public graph accessor
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]._keras_history.operation  # noqa: SLF001


def _consumers(layer) -> int:
    return len(layer._outbound_nodes)  # noqa: SLF001


def foldable_pairs(model: keras.Model) -> dict[str, str]:
    """``{bn path: conv path}`` of the batch norms in ``model`` (nested models included)
    that follow a Conv1D/Conv2D whose output feeds nothing else, normalise the channel
    axis, and are used once. Paths are ``'outer/inner/layer'`` names."""
    pairs = {}

    def walk(m: keras.Model, prefix: str):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer, f"{prefix}{layer.name}/")
            elif isinstance(layer, keras.layers.BatchNormalization):
                conv = _producer(layer)
                channels_last = layer.axis in (-1, len(layer.input.shape) - 1)
                if (isinstance(conv, CONV_TYPES) and conv.data_format == "channels_last" and channels_last
                        and _consumers(conv) == 1 and layer.center and layer.scale is not None):
                    pairs[f"{prefix}{layer.name}"] = f"{prefix}{conv.name}"

    walk(model, "")
    return pairs


def _folded_conv_weights(conv, bn) -> list[np.ndarray]:
    kernel = np.asarray(conv.kernel, np.float64)
    bias = np.asarray(conv.bias, np.float64) if conv.use_bias else np.zeros(kernel.shape[-1])
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else np.ones(kernel.shape[-1])
    beta = np.asarray(bn.beta, np.float64) if bn.center else np.zeros(kernel.shape[-1])
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance, np.float64) + bn.epsilon)
    new_bias = (bias - np.asarray(bn.moving_mean, np.float64)) * scale + beta
    return [(kernel * scale).astype(np.float32), new_bias.astype(np.float32)]


def fold_batch_norms(model: keras.Model, hoist_lstm_projection: bool = False) -> keras.Model:
    """An inference-only copy of ``model`` with every foldable batch norm (see
    ``foldable_pairs``) merged into its convolution and replaced by a ``FoldedBatchNorm`` (identity) layer.

    Layer names, dtype policies, inputs and outputs are kept; every other weight is copied.
    Predictions equal ``model(x, training=False)`` up to fp32 rounding. ``model`` must be a
    functional model (nested functional models are folded too) and is not modified.

    ``hoist_lstm_projection``: also replace every ``RNN(PeepholeLSTMCell)`` by a
    ``PeepholeLSTM`` (what ``optimize_for_inference`` does).
    """
    pairs = foldable_pairs(model)
    convs = {c: b for b, c in pairs.items()}
    originals = {}

    def index(m, prefix):
        for layer in m.layers:
            originals[f"{prefix}{layer.name}"] = layer
            if isinstance(layer, keras.Model):
                index(layer, f"{prefix}{layer.name}/")

    index(model, "")
    by_identity = {id(layer): path for path, layer in originals.items()}

    def clone(layer):
        path = by_identity[id(layer)]
        if isinstance(layer, keras.Model):  # clone_model(recursive=True) recurses one level only
            return keras.models.clone_model(layer, clone_function=clone)
        if hoist_lstm_projection and _hoistable(layer):
            c = layer.cell
            return PeepholeLSTM(c.units, c.cell_clip, c.forget_bias, name=layer.name, dtype=layer.dtype_policy.name)
        if path in pairs:
            return FoldedBatchNorm(name=layer.name, dtype=layer.dtype_policy.name)
        config = layer.get_config()
        if path in convs:
            config = {**config, "use_bias": True, "bias_initializer": "zeros"}
        return layer.__class__.from_config(config)

    folded = keras.models.clone_model(model, clone_function=clone)

    def copy(dst_model, prefix):
        for dst in dst_model.layers:
            path = f"{prefix}{dst.name}"
            if isinstance(dst, keras.Model):
                copy(dst, f"{path}/")
            elif path in convs:
                dst.set_weights(_folded_conv_weights(originals[path], originals[convs[path]]))
            elif path not in pairs and dst.weights:
                dst.set_weights(originals[path].get_weights())

    copy(folded, "")
    return folded


def _hoistable(layer) -> bool:
    return (isinstance(layer, keras.layers.RNN) and isinstance(layer.cell, PeepholeLSTMCell)
            and layer.return_sequences and not (layer.return_state or layer.go_backwards or layer.stateful))


def optimize_for_inference(model: keras.Model) -> keras.Model:
    """``fold_batch_norms(model)`` with every ``RNN(PeepholeLSTMCell)`` replaced by a
    ``PeepholeLSTM`` (same name, weights and outputs). Inference only."""
    return fold_batch_norms(model, hoist_lstm_projection=True)


# The state of LSTM layer k (1-based, bottom up) as an input and output of the stateful model:
# the hidden state h_k and the cell state c_k, the order of Keras' [h, c].
STATE_PARTS = ("h", "c")
RECURRENT_TYPES = (keras.layers.RNN, PeepholeLSTM)  # keras.layers.LSTM is an RNN


def recurrent_layers(model: keras.Model) -> list:
    """The LSTM layers of ``model`` (``RNN(PeepholeLSTMCell)``, ``keras.layers.LSTM`` or
    ``PeepholeLSTM``), bottom up."""
    return [layer for layer in model.layers if isinstance(layer, RECURRENT_TYPES)]


def recurrent_units(layer) -> int:
    """The size of ``h`` and ``c`` of one of ``recurrent_layers``."""
    return layer.cell.units if isinstance(layer, keras.layers.RNN) else layer.units


def state_names(num_layers: int) -> list[str]:
    """``['h_1', 'c_1', 'h_2', 'c_2', …]``: the state inputs and outputs of
    ``with_recurrent_state`` for a model with ``num_layers`` LSTM layers."""
    return [f"{part}_{k}" for k in range(1, num_layers + 1) for part in STATE_PARTS]


def with_recurrent_state(model: keras.Model) -> keras.Model:
    """``model`` with the state of its LSTMs as extra inputs and outputs, to follow a stream
    chunk by chunk: the state a call returns is the state the next chunk starts from.

    Inputs: the model's (a dict) plus ``h_k``, ``c_k`` ``(batch, units)`` float32 for LSTM layer
    ``k`` (``state_names``; zeros start a sequence). Outputs: the model's (a dict) plus
    ``h_k``, ``c_k`` after the chunk's last frame. Called on a sequence cut into chunks, it
    returns what ``model`` returns on the whole sequence (up to fp32 rounding): the per-frame
    networks and the head see one frame at a time and the LSTMs carry the rest.

    The per-frame networks and the head are ``model``'s own layers (shared weights); each LSTM
    is a ``return_state=True`` copy of the model's, with its weights copied, so the step is
    the layer's own (``peephole_update`` for the peephole cell). ``model`` must be a functional
    model with dict inputs whose LSTMs form one chain (each feeds the next; the outputs depend
    on the sequence only through the last one). A model without LSTMs is returned as it is.
    """
    lstms = recurrent_layers(model)
    if not lstms:
        return model
    if not isinstance(model.input, dict):
        raise ValueError(f"with_recurrent_state needs a model with dict inputs. Received: {model.input}")
    for below, above in zip(lstms, lstms[1:]):
        if _producer(above) is not below:
            raise ValueError(f"{model.name}: LSTM {above.name!r} does not read the output of {below.name!r}; "
                             f"with_recurrent_state needs the LSTMs to form one chain")
    for layer in lstms:
        if isinstance(layer, keras.layers.RNN) and (not layer.return_sequences or layer.return_state
                                                    or layer.go_backwards or layer.stateful):
            raise ValueError(f"{model.name}: LSTM {layer.name!r} must return sequences, run forwards and "
                             f"not return or keep state itself")
    features = keras.Model(model.inputs, lstms[0].input, name=f"{model.name}_features")
    head = keras.Model(lstms[-1].output, model.output, name=f"{model.name}_head")

    inputs = {name: keras.Input(batch_shape=t.shape, dtype=t.dtype, name=name) for name, t in model.input.items()}
    state_in, state_out = {}, {}
    x = features(inputs)
    for k, layer in enumerate(lstms, 1):
        h_name, c_name = state_names(k)[-2:]
        units = recurrent_units(layer)
        state_in[h_name] = keras.Input((units,), dtype="float32", name=h_name)
        state_in[c_name] = keras.Input((units,), dtype="float32", name=c_name)
        stateful = layer.__class__.from_config({**layer.get_config(), "return_state": True})
        x, state_out[h_name], state_out[c_name] = stateful(x, initial_state=[state_in[h_name], state_in[c_name]])
        stateful.set_weights(layer.get_weights())
    return keras.Model({**inputs, **state_in}, {**head(x), **state_out}, name=f"{model.name}_stateful")
