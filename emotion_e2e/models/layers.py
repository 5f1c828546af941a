"""Small weightless layers the model graph needs, registered so a ``.keras`` file reloads.

``FoldTime`` / ``UnfoldTime`` run a per-frame network over a sequence by folding time
into the batch axis (instead of ``TimeDistributed``, which Keras 3.14+ exports wrongly);
both handle a dynamic batch and a dynamic time length. ``CaffePreprocessing`` is
``keras.applications.resnet.preprocess_input`` written as a layer, for [0, 1] inputs.
``l2_regularizer`` is the weight decay every kernel of the feature networks carries.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

PACKAGE = "emotion_e2e"

# keras.applications.resnet.preprocess_input ("caffe" mode): BGR channel means of ImageNet
# on the 0..255 scale, which the ImageNet weights of keras' ResNet50 were trained with.
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)
PIXEL_SCALE = 255.0


@keras.saving.register_keras_serializable(package=PACKAGE)
class HalfL2(keras.regularizers.Regularizer):
    """Weight decay ``l2 · Σw² / 2`` (docs/design.md §6): the authors' TF1
    ``l2_regularizer(l2)``, computed as they did, ``l2 · tf.nn.l2_loss(w)`` (one kernel;
    Keras' ``L2(l2 / 2)`` is the same value as a square and a sum)."""

    def __init__(self, l2: float):
        self.l2 = float(l2)

    def __call__(self, x):
        return ops.convert_to_tensor(self.l2, x.dtype) * tf.nn.l2_loss(x)  # ops.cast would round it through float32

    def get_config(self):
        return {"l2": self.l2}


def l2_regularizer(l2: float) -> keras.regularizers.Regularizer:
    """The weight decay every kernel of the feature networks carries: ``HalfL2(l2)``."""
    return HalfL2(l2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FoldTime(keras.layers.Layer):
    """``(batch, time, *frame_shape)`` → ``(batch·time, *frame_shape)``.

    ``frame_shape`` must be static (it is: the inputs declare it); batch and time may be
    dynamic.
    """

    def build(self, input_shape):
        if len(input_shape) < 3 or any(d is None for d in input_shape[2:]):
            raise ValueError(f"{self.name}: expected (batch, time, *frame_shape) with a static frame_shape. "
                             f"Received: input_shape={tuple(input_shape)}")

    def call(self, inputs):
        return ops.reshape(inputs, (-1,) + tuple(inputs.shape[2:]))

    def compute_output_shape(self, input_shape):
        batch, time = input_shape[0], input_shape[1]
        folded = batch * time if batch is not None and time is not None else None
        return (folded,) + tuple(input_shape[2:])


@keras.saving.register_keras_serializable(package=PACKAGE)
class UnfoldTime(keras.layers.Layer):
    """``[features (batch·time, *feature_shape), reference (batch, time, ...)]`` →
    ``(batch, time, *feature_shape)``.

    ``reference`` is the sequence that was folded; only its (dynamic) batch and time
    sizes are read.
    """

    def call(self, inputs):
        features, reference = inputs
        shape = ops.shape(reference)
        return ops.reshape(features, (shape[0], shape[1]) + tuple(features.shape[1:]))

    def compute_output_shape(self, input_shape):
        features, reference = input_shape
        return (reference[0], reference[1]) + tuple(features[1:])


@keras.saving.register_keras_serializable(package=PACKAGE)
class CaffePreprocessing(keras.layers.Layer):
    """RGB in [0, 1] ``(..., 3)`` → what keras' ImageNet ResNet50 expects ``(..., 3)``.

    Equal to ``keras.applications.resnet.preprocess_input(255 · x)``: scale to 0..255,
    RGB → BGR, subtract the ImageNet BGR channel means. No weights.
    """

    def __init__(self, scale=PIXEL_SCALE, mean=IMAGENET_BGR_MEAN, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.mean = tuple(float(m) for m in mean)

    def call(self, inputs):
        bgr = ops.flip(inputs, axis=-1) * self.scale
        return bgr - ops.cast(ops.convert_to_tensor(self.mean), bgr.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "scale": self.scale, "mean": list(self.mean)}
