"""A GoogLeNet-style network built from Inception modules.

An Inception module runs four branches side by side on the same input and
concatenates them along depth: a 1x1 convolution; a 1x1 reduction then a
3x3; a 1x1 reduction then a 5x5; and a 3x3 max pooling (stride 1) then a
1x1 projection. All use 'same' padding so the branch outputs share height
and width. The 1x1 reductions are what make the module affordable (see
:mod:`catdog.models.ops`); :func:`naive_inception_module` leaves them out
for comparison.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from catdog.models.layers import classifier_head, conv_bn_act, inputs_and_rescale

BRANCH_WIDTHS = ("1x1", "3x3_reduce", "3x3", "5x5_reduce", "5x5", "pool_proj")


def inception_module(x, widths: Sequence[int], name: str):
    """Inception module with 1x1 dimension reductions.

    Args:
        x: Input tensor (batch, H, W, C).
        widths: Six filter counts, in the order of :data:`BRANCH_WIDTHS`.
        name: Prefix for every layer of the module.

    Returns:
        Tensor (batch, H, W, w1x1 + w3x3 + w5x5 + pool_proj).
    """
    w1, r3, w3, r5, w5, wp = widths
    b1 = conv_bn_act(x, w1, 1, f"{name}_b1_1x1")
    b2 = conv_bn_act(x, r3, 1, f"{name}_b2_3x3_reduce")
    b2 = conv_bn_act(b2, w3, 3, f"{name}_b2_3x3")
    b3 = conv_bn_act(x, r5, 1, f"{name}_b3_5x5_reduce")
    b3 = conv_bn_act(b3, w5, 5, f"{name}_b3_5x5")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_b4_pool")(x)
    b4 = conv_bn_act(b4, wp, 1, f"{name}_b4_pool_proj")
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([b1, b2, b3, b4])


def naive_inception_module(x, widths: Sequence[int], name: str):
    """Inception module without 1x1 reductions: 1x1, 3x3, 5x5 and pooling side by side.

    Args:
        x: Input tensor (batch, H, W, C).
        widths: Three filter counts (1x1, 3x3, 5x5).
        name: Prefix for every layer of the module.

    Returns:
        Tensor (batch, H, W, w1x1 + w3x3 + w5x5 + C): the pooling branch keeps
        the input depth, which is why stacking naive modules grows so fast.
    """
    if len(widths) != 3 or any(int(w) <= 0 for w in widths):
        raise ValueError(f"{name}: naive module needs three positive widths, got {list(widths)!r}")
    w1, w3, w5 = widths
    b1 = conv_bn_act(x, w1, 1, f"{name}_b1_1x1")
    b2 = conv_bn_act(x, w3, 3, f"{name}_b2_3x3")
    b3 = conv_bn_act(x, w5, 5, f"{name}_b3_5x5")
    b4 = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{name}_b4_pool")(x)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([b1, b2, b3, b4])


def build_inception(
    image_size: int,
    stages: Sequence[Sequence[Sequence[int]]],
    stem_filters: int = 32,
    num_classes: int = 2,
    dropout: float = 0.3,
    name: str = "inception",
) -> keras.Model:
    """GoogLeNet-style network: a strided stem, then stages of Inception modules.

    Stages are separated by 3x3/2 max pooling, as in GoogLeNet. With a 96
    pixel input: stem 96 -> 48 -> 24, stage 1 at 24x24, stage 2 at 12x12,
    stage 3 at 6x6.

    Args:
        image_size: Input side in pixels.
        stages: Per stage, a list of modules, each six widths (see
            :func:`inception_module`).
        stem_filters: Width of the stem convolutions.
        num_classes: Size of the softmax output.
        dropout: Dropout rate before the classifier.
        name: Model name (also the architecture name reported by the app).

    Returns:
        An uncompiled Keras model following the contract in :mod:`catdog.models`.
    """
    inputs, x = inputs_and_rescale(image_size)
    x = conv_bn_act(x, stem_filters, 3, "stem_1", stride=2)  # S/2
    x = conv_bn_act(x, stem_filters, 3, "stem_2")
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)  # S/4
    for s, stage in enumerate(stages, start=1):
        if s > 1:
            x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"stage{s}_pool")(x)
        for m, widths in enumerate(stage, start=1):
            x = inception_module(x, widths, f"stage{s}_module{m}")
    features = layers.Activation("linear", name="features")(x)
    outputs = classifier_head(features, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name)
