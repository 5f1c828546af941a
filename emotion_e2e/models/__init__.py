"""The networks: raw-audio CNN, face ResNet, peephole LSTMs and the assembled model; their
inference-time transformations.

Importing this package registers the custom layers, so ``keras.saving.load_model`` can
read a saved ``.keras`` model.
"""

from emotion_e2e.models.audio import build_audio_network
from emotion_e2e.models.face import build_backbone, build_face_network, num_features
from emotion_e2e.models.inference import fold_batch_norms, optimize_for_inference, with_recurrent_state
from emotion_e2e.models.kernels import FusedAdam, FusedBatchNormalization, MatmulConv2D, PhaseConv1D
from emotion_e2e.models.layers import CaffePreprocessing, FoldTime, UnfoldTime
from emotion_e2e.models.model import apply_per_frame, build_model, copy_feature_weights, feature_network
from emotion_e2e.models.recurrent import PeepholeLSTM, PeepholeLSTMCell, apply_recurrent


def load_model(path: str, compile: bool = False):  # noqa: A002 - keras' own argument name
    """A saved ``.keras`` model, with this package's layers, loss and metrics registered."""
    import keras  # noqa: PLC0415

    import emotion_e2e.losses  # noqa: F401, PLC0415 - registers CCCLoss
    import emotion_e2e.metrics  # noqa: F401, PLC0415 - registers the streaming metrics

    return keras.saving.load_model(path, compile=compile)

__all__ = [
    "CaffePreprocessing",
    "FoldTime",
    "FusedAdam",
    "FusedBatchNormalization",
    "MatmulConv2D",
    "PeepholeLSTM",
    "PeepholeLSTMCell",
    "PhaseConv1D",
    "UnfoldTime",
    "apply_per_frame",
    "apply_recurrent",
    "build_audio_network",
    "build_backbone",
    "build_face_network",
    "build_model",
    "copy_feature_weights",
    "feature_network",
    "fold_batch_norms",
    "load_model",
    "num_features",
    "optimize_for_inference",
    "with_recurrent_state",
]
