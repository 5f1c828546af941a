"""The face network: a ResNet v1 backbone on one face crop, global average pooled.

    (frames, face_size, face_size, 3) in [0, 1] → [preprocessing] → backbone → (frames, F)

``F`` is 2048 for ``resnet50`` (keras.applications' ResNet50, the paper's network) and 512
for ``resnet18`` / ``resnet10`` (basic-block ResNets built here, CPU-sized demos only).

Preprocessing: keras' ResNet50 ImageNet weights were trained on caffe-style inputs
(0..255, BGR, ImageNet mean subtracted), so the ``resnet50`` network starts with
``CaffePreprocessing`` whatever ``cfg.weights`` is: a model trained from scratch and one
started from ImageNet (downloaded, or a local copy of the file) read faces the same way.
The small backbones take the [0, 1] crop as it is.

Weights (``cfg.weights``): ``'none'`` random init; ``'imagenet'`` downloads keras' file
(opt-in: nothing is ever downloaded otherwise); any other value is the path of a local
weights file loaded into the backbone, i.e. the nested model ``face_network.get_layer('backbone')``
(``backbone.save_weights('x.weights.h5')`` writes one; keras' legacy ``.h5`` ImageNet
file for ResNet50 without top loads too).

Regularisation: L2 ``cfg.l2`` on every conv/dense kernel (set as the layers'
``kernel_regularizer``, so it is in ``model.losses`` and in the saved config).
Batch-norm momentum is ``cfg.bn_momentum`` in every backbone.
"""

from __future__ import annotations

import os

import keras

from emotion_e2e.config import FaceNetConfig
from emotion_e2e.models.layers import CaffePreprocessing, l2_regularizer

BACKBONE_NAME = "backbone"
KERNEL_INITIALIZER = "he_normal"
BN_EPSILON = 1.001e-5  # keras.applications' ResNet value

# ResNet v1 with basic blocks (He et al. 2016, table 1).
BASIC_BLOCK_STAGES = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}
STAGE_WIDTHS = (64, 128, 256, 512)
STEM_KERNEL, STEM_STRIDE = 7, 2
STEM_POOL, STEM_POOL_STRIDE = 3, 2
BLOCK_KERNEL = 3
DOWNSAMPLE_STRIDE = 2  # first block of every stage but the first

RESNET50_FEATURES = 2048


def num_features(cfg: FaceNetConfig) -> int:
    """Width of the network's output for ``cfg.backbone``."""
    return RESNET50_FEATURES if cfg.backbone == "resnet50" else STAGE_WIDTHS[-1]


def apply_conv_bn(x, filters: int, kernel_size: int, strides: int, cfg: FaceNetConfig, name: str):
    """Conv2D (same padding, no bias) → batch norm: ``(n, h, w, c)`` → ``(n, h/strides, w/strides, filters)``."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                            kernel_initializer=KERNEL_INITIALIZER,
                            kernel_regularizer=l2_regularizer(cfg.l2), name=f"{name}_conv")(x)
    return keras.layers.BatchNormalization(momentum=cfg.bn_momentum, epsilon=BN_EPSILON, name=f"{name}_bn")(x)


def apply_basic_block(x, filters: int, strides: int, cfg: FaceNetConfig, name: str):
    """ResNet v1 basic block: ``relu(shortcut(x) + bn(conv3×3(relu(bn(conv3×3/strides(x))))))``.

    ``(n, h, w, c)`` → ``(n, h/strides, w/strides, filters)``; the shortcut is a 1×1
    projection (+ batch norm) when the shape changes, the identity otherwise.
    """
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = apply_conv_bn(x, filters, 1, strides, cfg, name=f"{name}_0")
    y = apply_conv_bn(x, filters, BLOCK_KERNEL, strides, cfg, name=f"{name}_1")
    y = keras.layers.ReLU(name=f"{name}_1_relu")(y)
    y = apply_conv_bn(y, filters, BLOCK_KERNEL, 1, cfg, name=f"{name}_2")
    y = keras.layers.Add(name=f"{name}_add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def apply_stage(x, filters: int, blocks: int, strides: int, cfg: FaceNetConfig, name: str):
    """``blocks`` basic blocks, the first one with ``strides``."""
    for b in range(blocks):
        x = apply_basic_block(x, filters, strides if b == 0 else 1, cfg, name=f"{name}_block{b + 1}")
    return x


def build_basic_resnet(cfg: FaceNetConfig, face_size: int, name: str = BACKBONE_NAME) -> keras.Model:
    """ResNet v1 with basic blocks (``resnet18`` / ``resnet10``), random init:
    ``(n, face_size, face_size, 3)`` → ``(n, 512)``.

    7×7/2 stem conv → BN → ReLU → 3×3/2 max-pool → 4 stages of widths 64-128-256-512
    (strides 1, 2, 2, 2) → global average pool.
    """
    images = keras.Input((face_size, face_size, 3), name="images")
    x = apply_conv_bn(images, STAGE_WIDTHS[0], STEM_KERNEL, STEM_STRIDE, cfg, name="conv1")
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.MaxPooling2D(STEM_POOL, strides=STEM_POOL_STRIDE, padding="same", name="pool1")(x)
    for s, (width, blocks) in enumerate(zip(STAGE_WIDTHS, BASIC_BLOCK_STAGES[cfg.backbone])):
        x = apply_stage(x, width, blocks, 1 if s == 0 else DOWNSAMPLE_STRIDE, cfg, name=f"conv{s + 2}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(images, x, name=name)


def build_resnet50(cfg: FaceNetConfig, face_size: int, name: str = BACKBONE_NAME) -> keras.Model:
    """keras.applications' ResNet50 without top, average pooled, with ``cfg``'s L2 and BN
    momentum: ``(n, face_size, face_size, 3)`` caffe-preprocessed → ``(n, 2048)``."""
    weights = "imagenet" if cfg.weights == "imagenet" else None
    model = keras.applications.ResNet50(include_top=False, weights=weights, pooling="avg",
                                        input_shape=(face_size, face_size, 3), name=name)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = cfg.bn_momentum
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            # On the layer for get_config (a reloaded model rebuilds it), on the variable
            # for model.losses (keras reads variable.regularizer).
            layer.kernel_regularizer = l2_regularizer(cfg.l2)
            layer.kernel.regularizer = layer.kernel_regularizer
    return model


def build_backbone(cfg: FaceNetConfig, face_size: int, name: str = BACKBONE_NAME) -> keras.Model:
    """The backbone of ``cfg.backbone`` with ``cfg.weights`` loaded:
    ``(n, face_size, face_size, 3)`` → ``(n, num_features(cfg))``.

    Raises FileNotFoundError when ``cfg.weights`` is a path that does not exist.
    """
    local = cfg.weights not in ("none", "imagenet")
    if local and not os.path.exists(cfg.weights):
        raise FileNotFoundError(f"FaceNetConfig.weights must be 'none', 'imagenet' or an existing weights file. "
                                f"Received: weights={cfg.weights!r} (no such file)")
    build = build_resnet50 if cfg.backbone == "resnet50" else build_basic_resnet
    model = build(cfg, face_size, name)
    if local:
        model.load_weights(cfg.weights)
    return model


def build_face_network(cfg: FaceNetConfig, face_size: int, name: str = "face_network") -> keras.Model:
    """The per-frame face network: ``(frames, face_size, face_size, 3)`` float32 RGB in [0, 1]
    → ``(frames, num_features(cfg))`` (2048 for resnet50, 512 for resnet18 / resnet10).

    The backbone is the nested model named ``'backbone'``.
    """
    faces = keras.Input((face_size, face_size, 3), name="face_frames")
    x = faces
    if cfg.backbone == "resnet50":
        x = CaffePreprocessing(name="caffe_preprocessing")(x)
    x = build_backbone(cfg, face_size)(x)
    return keras.Model(faces, x, name=name)
