"""The assembled model (docs/design.md §5): per-frame feature networks → fusion → LSTMs → head.

    audio (batch, time, 640)         → fold → audio_network → unfold → (batch, time, 1280) ┐
    face  (batch, time, 96, 96, 3)   → fold → face_network  → unfold → (batch, time, 2048) ┴ concat
        → (batch, time, 3328) → cfg.recurrent.layers LSTMs → (batch, time, units)
        → one linear unit per label and frame → {label: (batch, time)}

Batch and time are dynamic. The model's inputs are named after the modalities (``audio``,
``face``), its outputs after the label dimensions. The feature networks are nested models
named ``audio_network`` and ``face_network`` so weights move between an audio-only, a
face-only and a multimodal model by name (``copy_feature_weights``).
"""

from __future__ import annotations

import keras

from emotion_e2e.config import MODALITIES, InputConfig, ModelConfig
from emotion_e2e.models.audio import build_audio_network
from emotion_e2e.models.face import build_face_network
from emotion_e2e.models.layers import FoldTime, UnfoldTime
from emotion_e2e.models.recurrent import apply_recurrent

FEATURE_NETWORKS = {m: f"{m}_network" for m in MODALITIES}
FEATURE_NAMES = {m: f"{m}_features" for m in MODALITIES}
FUSION_NAME = "fusion"
HEAD_UNITS = 1  # one linear output per label dimension and frame


def apply_per_frame(x, network: keras.Model, name: str):
    """Runs a per-frame ``network`` on every frame: ``(batch, time, *frame_shape)`` →
    ``(batch, time, features)``, by folding time into the batch axis and back."""
    folded = FoldTime(name=f"{name}_fold")(x)
    return UnfoldTime(name=name)([network(folded), x])


def apply_head(x, label_names, name: str = "head") -> dict:
    """A linear unit per label at every time step: ``(batch, time, features)`` →
    ``{label: (batch, time)}``; the output layers are named after the labels.

    The head computes in the policy's variable dtype: float32 under a mixed-precision policy,
    so the loss sees float32 (float64 under the float64 policy)."""
    outputs, dtype = {}, keras.config.dtype_policy().variable_dtype
    for label in label_names:
        y = keras.layers.Dense(HEAD_UNITS, dtype=dtype, name=f"{name}_{label}")(x)
        outputs[label] = keras.layers.Reshape((-1,), dtype=dtype, name=label)(y)
    return outputs


def build_model(cfg: ModelConfig, inputs: InputConfig, name: str = "emotion_model") -> keras.Model:
    """The whole model for ``inputs.modalities`` and ``inputs.label_names``.

    Inputs (a dict keyed by modality): ``'audio'`` (batch, time, samples_per_frame) float32;
    ``'face'`` (batch, time, face_size, face_size, 3) float32 in [0, 1].
    Outputs: ``{label: (batch, time) float32 for label in inputs.label_names}``. Calling the
    model returns the dict in label order, but Keras flattens dict outputs by sorted key:
    ``model.output_names`` and ``model.outputs`` are in ``sorted(inputs.label_names)`` order.
    Fused features: 1280 audio-only, 2048 face-only (resnet50), 3328 both.
    """
    if not inputs.label_names:
        raise ValueError(f"build_model needs at least one label name. Received: label_names={inputs.label_names}")
    shapes = {"audio": (inputs.samples_per_frame,), "face": (inputs.face_size, inputs.face_size, 3)}
    tensors, features = {}, []
    for modality in inputs.modalities:
        x = keras.Input((None, *shapes[modality]), name=modality)
        network = (build_audio_network(cfg.audio, inputs.samples_per_frame, name=FEATURE_NETWORKS[modality])
                   if modality == "audio" else
                   build_face_network(cfg.face, inputs.face_size, name=FEATURE_NETWORKS[modality]))
        tensors[modality] = x
        features.append(apply_per_frame(x, network, name=FEATURE_NAMES[modality]))
    x = features[0] if len(features) == 1 else keras.layers.Concatenate(name=FUSION_NAME)(features)
    x = apply_recurrent(x, cfg.recurrent, name="lstm")
    return keras.Model(tensors, apply_head(x, inputs.label_names), name=name)


def feature_network(model: keras.Model, modality: str) -> keras.Model:
    """The nested per-frame network of ``modality`` ('audio' or 'face') in ``model``."""
    if modality not in FEATURE_NETWORKS:
        raise ValueError(f"modality must be one of {tuple(FEATURE_NETWORKS)}. Received: modality={modality!r}")
    names = [layer.name for layer in model.layers]
    if FEATURE_NETWORKS[modality] not in names:
        raise ValueError(f"model {model.name!r} has no {FEATURE_NETWORKS[modality]!r} for modality {modality!r}. "
                         f"Its layers: {names}")
    return model.get_layer(FEATURE_NETWORKS[modality])


def copy_feature_weights(src_model: keras.Model, dst_model: keras.Model, modality: str) -> int:
    """Copies every weight (trainable and batch-norm statistics) of ``modality``'s feature
    network from ``src_model`` into ``dst_model``; returns the number of tensors copied.

    The two networks must have the same architecture (same config); raises ValueError
    naming the first mismatch otherwise, before anything is copied.
    """
    src, dst = feature_network(src_model, modality), feature_network(dst_model, modality)
    if len(src.weights) != len(dst.weights):
        raise ValueError(f"{src.name}: {len(src.weights)} weights in {src_model.name!r} vs. "
                         f"{len(dst.weights)} in {dst_model.name!r}")
    for s, d in zip(src.weights, dst.weights):
        if tuple(s.shape) != tuple(d.shape):
            raise ValueError(f"{src.name}: weight {s.path} has shape {tuple(s.shape)} in {src_model.name!r} "
                             f"but {d.path} has {tuple(d.shape)} in {dst_model.name!r}")
    for s, d in zip(src.weights, dst.weights):
        d.assign(s)
    return len(src.weights)
