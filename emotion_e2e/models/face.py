"""The face network: a ResNet v1 backbone on one face crop, global average pooled.

    (frames, face_size, face_size, 3) in [0, 1] → [preprocessing] → backbone → (frames, F)

``F`` is 2048 for ``resnet50`` and ``resnet50_keras`` and 512 for ``resnet18`` / ``resnet10``.

- ``resnet50`` (the paper's network, docs/design.md §5) is TF-slim's ResNet-v1-50 as the
  authors' graph builds it, ``resnet_v1_50(images, num_classes=None)`` under
  ``resnet_arg_scope()``: bias-free convolutions, batch norm (epsilon 1e-5) and ReLU after
  each, the stride of a block in the 3×3 conv of its *last* unit, and slim's ``conv2d_same``
  for strided convolutions (explicit zero padding, then a VALID conv). It reads the [0, 1]
  crop as it is.
- ``resnet50_keras`` is keras.applications' ResNet50. Its ImageNet weights were trained on
  caffe-style inputs (0..255, BGR, ImageNet mean subtracted), so it starts with
  ``CaffePreprocessing`` whatever ``cfg.weights`` is: a model trained from scratch and one
  started from ImageNet read faces the same way.
- ``resnet18`` / ``resnet10`` are basic-block ResNets built here (CPU-sized demos only); they
  read the [0, 1] crop as it is.

Layer names of ``resnet50`` are slim's variable scopes with ``'/'`` written ``'.'`` (Keras
forbids ``'/'`` in names): conv ``resnet_v1_50.block1.unit_1.bottleneck_v1.conv1``, its batch
norm ``resnet_v1_50.block1.unit_1.bottleneck_v1.conv1.BatchNorm``. A checkpoint of the
authors' graph (slim's scopes inside their ``video_model`` scope) maps mechanically:
``'video_model/' + n`` for ``n`` in ``slim_variable_names(layer)``, i.e. a Conv2D's kernel is
``<slim_scope(layer.name)>/weights`` (HWIO, the layout of Keras' kernel) and a batch norm's
``gamma`` / ``beta`` / ``moving_mean`` / ``moving_variance`` are the slim variables of the same
names under ``slim_scope(layer.name)``.

Weights (``cfg.weights``): ``'none'`` random init; ``'imagenet'`` (``resnet50_keras`` only)
downloads keras' file (opt-in: nothing is ever downloaded otherwise); any other value is the
path of a local weights file loaded into the backbone, i.e. the nested model
``face_network.get_layer('backbone')`` (``backbone.save_weights('x.weights.h5')`` writes one;
keras' legacy ``.h5`` ImageNet file for ResNet50 without top loads into ``resnet50_keras``).

Regularisation: L2 ``cfg.l2`` on every conv/dense kernel (set as the layers'
``kernel_regularizer``, so it is in ``model.losses`` and in the saved config).
Batch-norm momentum is ``cfg.bn_momentum`` in every backbone.
"""

from __future__ import annotations

import os

import keras

from emotion_e2e.config import FaceNetConfig
from emotion_e2e.models.kernels import FusedBatchNormalization, MatmulConv2D
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

# TF-slim's resnet_v1_50 (docs/design.md §5): (base depth, units, stride) per block; a unit
# outputs BOTTLENECK_EXPANSION × base depth channels; the stride sits in the last unit.
SLIM_SCOPE = "resnet_v1_50"
SLIM_BLOCKS = ((64, 3, 2), (128, 4, 2), (256, 6, 2), (512, 3, 1))
BOTTLENECK_EXPANSION = 4
SLIM_BN_EPSILON = 1e-5  # slim's resnet_arg_scope
# Keras variable name → slim variable name (same layout: HWIO kernels, per-channel vectors).
SLIM_VARIABLES = {"kernel": "weights", "gamma": "gamma", "beta": "beta",
                  "moving_mean": "moving_mean", "moving_variance": "moving_variance"}

RESNET50_BACKBONES = ("resnet50", "resnet50_keras")
RESNET50_FEATURES = 2048


def num_features(cfg: FaceNetConfig) -> int:
    """Width of the network's output for ``cfg.backbone``."""
    return RESNET50_FEATURES if cfg.backbone in RESNET50_BACKBONES else STAGE_WIDTHS[-1]


def apply_conv_bn(x, filters: int, kernel_size: int, strides: int, cfg: FaceNetConfig, name: str):
    """Conv2D (same padding, no bias) → batch norm: ``(n, h, w, c)`` → ``(n, h/strides, w/strides, filters)``."""
    x = MatmulConv2D(filters, kernel_size, strides=strides, padding="same", use_bias=False,
                     kernel_initializer=KERNEL_INITIALIZER, kernel_regularizer=l2_regularizer(cfg.l2),
                     name=f"{name}_conv")(x)
    return FusedBatchNormalization(momentum=cfg.bn_momentum, epsilon=BN_EPSILON, synchronized=True,
                                   name=f"{name}_bn")(x)


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


def slim_scope(layer_name: str) -> str:
    """The TF-slim variable scope of a ``resnet50`` layer:
    ``'resnet_v1_50.block1.unit_1.bottleneck_v1.conv1.BatchNorm'`` →
    ``'resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/BatchNorm'``."""
    return layer_name.replace(".", "/")


def slim_variable_names(layer: keras.layers.Layer) -> list[str]:
    """The slim names of ``layer.weights`` (a Conv2D or BatchNormalization of ``resnet50``),
    in the same order: ``['resnet_v1_50/conv1/weights']`` for the root conv,
    ``[…/BatchNorm/gamma, …/beta, …/moving_mean, …/moving_variance]`` for its batch norm."""
    return [f"{slim_scope(layer.name)}/{SLIM_VARIABLES[w.name]}" for w in layer.weights]


def apply_slim_conv(x, filters: int, kernel_size: int, strides: int, cfg: FaceNetConfig, name: str,
                    activation: bool = True):
    """slim's ``conv2d`` / ``conv2d_same`` under ``resnet_arg_scope``: bias-free conv → batch
    norm [→ ReLU], ``(n, h, w, c)`` → ``(n, ⌈h/strides⌉, ⌈w/strides⌉, filters)``.

    A strided conv wider than 1×1 pads explicitly, ``kernel_size − 1`` zeros split with the
    smaller half first, then convolves VALID (slim's ``conv2d_same``): Keras' ``'same'`` would
    put the odd zero at the end only, shifting the sampling grid on even inputs. Otherwise the
    conv is SAME (identical to slim's for stride 1, and for 1×1 kernels at any stride).
    """
    explicit = strides > 1 and kernel_size > 1
    if explicit:
        pad_total = kernel_size - 1
        pad = (pad_total // 2, pad_total - pad_total // 2)
        x = keras.layers.ZeroPadding2D((pad, pad), name=f"{name}.pad")(x)
    x = MatmulConv2D(filters, kernel_size, strides=strides, padding="valid" if explicit else "same",
                     use_bias=False, kernel_initializer=KERNEL_INITIALIZER,
                     kernel_regularizer=l2_regularizer(cfg.l2), name=name)(x)
    x = FusedBatchNormalization(momentum=cfg.bn_momentum, epsilon=SLIM_BN_EPSILON, synchronized=True,
                                name=f"{name}.BatchNorm")(x)
    return keras.layers.ReLU(name=f"{name}.relu")(x) if activation else x


def apply_bottleneck_v1(x, depth: int, depth_bottleneck: int, strides: int, cfg: FaceNetConfig, name: str):
    """slim's ``bottleneck`` (v1): ``relu(shortcut(x) + conv3(conv2(conv1(x))))``,
    ``(n, h, w, c)`` → ``(n, ⌈h/strides⌉, ⌈w/strides⌉, depth)``.

    conv1 1×1 → ``depth_bottleneck``, conv2 3×3 with ``strides`` (``conv2d_same``), conv3 1×1 →
    ``depth`` without ReLU. The shortcut is ``x`` subsampled by a 1×1 max-pool of stride
    ``strides`` when ``depth`` equals ``x``'s channels (the identity at stride 1), else a 1×1
    conv with ``strides`` and batch norm, without ReLU.
    """
    if x.shape[-1] == depth:
        shortcut = x
        if strides > 1:
            shortcut = keras.layers.MaxPooling2D(1, strides=strides, padding="same", name=f"{name}.shortcut")(x)
    else:
        shortcut = apply_slim_conv(x, depth, 1, strides, cfg, name=f"{name}.shortcut", activation=False)
    y = apply_slim_conv(x, depth_bottleneck, 1, 1, cfg, name=f"{name}.conv1")
    y = apply_slim_conv(y, depth_bottleneck, BLOCK_KERNEL, strides, cfg, name=f"{name}.conv2")
    y = apply_slim_conv(y, depth, 1, 1, cfg, name=f"{name}.conv3", activation=False)
    y = keras.layers.Add(name=f"{name}.add")([shortcut, y])
    return keras.layers.ReLU(name=f"{name}.relu")(y)


def apply_slim_block(x, base_depth: int, units: int, strides: int, cfg: FaceNetConfig, name: str):
    """slim's ``resnet_v1_block``: ``units`` bottlenecks of depth ``4·base_depth``, the last
    one with ``strides``: ``(n, h, w, c)`` → ``(n, ⌈h/strides⌉, ⌈w/strides⌉, 4·base_depth)``."""
    for u in range(1, units + 1):
        x = apply_bottleneck_v1(x, BOTTLENECK_EXPANSION * base_depth, base_depth, strides if u == units else 1,
                                cfg, name=f"{name}.unit_{u}.bottleneck_v1")
    return x


def build_slim_resnet50(cfg: FaceNetConfig, face_size: int, name: str = BACKBONE_NAME) -> keras.Model:
    """TF-slim's ResNet-v1-50 without logits, random init: ``(n, face_size, face_size, 3)``
    in [0, 1] → ``(n, 2048)`` (docs/design.md §5).

    7×7/2 root conv (``conv2d_same``) → 3×3/2 max-pool (SAME) → blocks of 3, 4, 6, 3
    bottlenecks (base depths 64-128-256-512, strides 2, 2, 2, 1 in each block's last unit) →
    global average pool. A 96×96 crop is 48 after the root conv, 24 after the pool, then 12,
    6, 3, 3 after the blocks.
    """
    images = keras.Input((face_size, face_size, 3), name="images")
    x = apply_slim_conv(images, STAGE_WIDTHS[0], STEM_KERNEL, STEM_STRIDE, cfg, name=f"{SLIM_SCOPE}.conv1")
    x = keras.layers.MaxPooling2D(STEM_POOL, strides=STEM_POOL_STRIDE, padding="same", name=f"{SLIM_SCOPE}.pool1")(x)
    for b, (base_depth, units, strides) in enumerate(SLIM_BLOCKS, 1):
        x = apply_slim_block(x, base_depth, units, strides, cfg, name=f"{SLIM_SCOPE}.block{b}")
    x = keras.layers.GlobalAveragePooling2D(name=f"{SLIM_SCOPE}.pool5")(x)
    return keras.Model(images, x, name=name)


def build_keras_resnet50(cfg: FaceNetConfig, face_size: int, name: str = BACKBONE_NAME) -> keras.Model:
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


BUILDERS = {"resnet50": build_slim_resnet50, "resnet50_keras": build_keras_resnet50,
            "resnet18": build_basic_resnet, "resnet10": build_basic_resnet}


def build_backbone(cfg: FaceNetConfig, face_size: int, name: str = BACKBONE_NAME) -> keras.Model:
    """The backbone of ``cfg.backbone`` with ``cfg.weights`` loaded:
    ``(n, face_size, face_size, 3)`` → ``(n, num_features(cfg))``.

    Raises FileNotFoundError when ``cfg.weights`` is a path that does not exist.
    """
    local = cfg.weights not in ("none", "imagenet")
    if local and not os.path.exists(cfg.weights):
        raise FileNotFoundError(f"FaceNetConfig.weights must be 'none', 'imagenet' or an existing weights file. "
                                f"Received: weights={cfg.weights!r} (no such file)")
    model = BUILDERS[cfg.backbone](cfg, face_size, name)
    if local:
        model.load_weights(cfg.weights)
    return model


def build_face_network(cfg: FaceNetConfig, face_size: int, name: str = "face_network") -> keras.Model:
    """The per-frame face network: ``(frames, face_size, face_size, 3)`` float32 RGB in [0, 1]
    → ``(frames, num_features(cfg))`` (2048 for resnet50 / resnet50_keras, 512 for resnet18 /
    resnet10).

    The backbone is the nested model named ``'backbone'``.
    """
    faces = keras.Input((face_size, face_size, 3), name="face_frames")
    x = faces
    if cfg.backbone == "resnet50_keras":
        x = CaffePreprocessing(name="caffe_preprocessing")(x)
    x = build_backbone(cfg, face_size)(x)
    return keras.Model(faces, x, name=name)
