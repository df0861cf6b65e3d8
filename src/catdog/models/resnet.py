"""A ResNet-style network built from residual blocks.

A residual block computes ``act(F(x) + shortcut(x))`` where F is two 3x3
convolutions with BatchNorm. The shortcut is the identity when shapes match
and a strided 1x1 projection when the stride or width changes. Because the
block only has to learn the residual F, a block whose F outputs zero is the
identity, and gradients reach early layers through the shortcuts.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from catdog.models.layers import activate, classifier_head, conv_bn_act, inputs_and_rescale


def residual_block(
    x,
    filters: int,
    name: str,
    stride: int = 1,
    activation: str = "relu",
    skip: bool = True,
    batch_norm: bool = True,
):
    """Basic residual block: two 3x3 convolutions plus a shortcut.

    Args:
        x: Input tensor (batch, H, W, C).
        filters: Output depth.
        name: Prefix for every layer of the block.
        stride: Stride of the first convolution (and of the projection).
        activation: 'relu' or 'leaky_relu'.
        skip: Add the shortcut. False gives the same block as a plain
            network, to compare against.
        batch_norm: Use BatchNorm after each convolution.

    Returns:
        Tensor (batch, H / stride, W / stride, filters).
    """
    in_channels = x.shape[-1]
    y = _conv_bn(x, filters, 3, stride, "same", batch_norm, f"{name}_conv1", f"{name}_bn1")
    y = activate(y, activation, f"{name}_act1")
    y = _conv_bn(y, filters, 3, 1, "same", batch_norm, f"{name}_conv2", f"{name}_bn2")
    if skip:
        shortcut = x
        if stride != 1 or in_channels != filters:
            shortcut = _conv_bn(x, filters, 1, stride, "valid", batch_norm, f"{name}_proj_conv", f"{name}_proj_bn")
        y = layers.Add(name=f"{name}_add")([y, shortcut])
    return activate(y, activation, f"{name}_out")


def _conv_bn(x, filters: int, kernel: int, stride: int, padding: str, batch_norm: bool, conv_name: str, bn_name: str):
    """Conv2D, then BatchNorm if ``batch_norm`` (the convolution has a bias only without it)."""
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding=padding,
        use_bias=not batch_norm,
        kernel_initializer="he_normal",
        name=conv_name,
    )(x)
    return layers.BatchNormalization(name=bn_name)(x) if batch_norm else x


def build_resnet(
    image_size: int,
    stage_filters: Sequence[int],
    blocks_per_stage: Sequence[int],
    stem_filters: int = 32,
    activation: str = "relu",
    num_classes: int = 2,
    dropout: float = 0.3,
    name: str = "resnet",
) -> keras.Model:
    """ResNet-style network: a strided stem, then stages of residual blocks.

    The first block of every stage after the first halves the resolution.
    With a 96 pixel input: stem 96 -> 48 -> 24, then 24, 12, 6, 3.

    Args:
        stage_filters: Width of each stage.
        blocks_per_stage: Number of residual blocks in each stage.
        activation: 'relu' or 'leaky_relu' (negative slope 0.01).
        image_size, stem_filters, num_classes, dropout, name: As for
            :func:`catdog.models.inception.build_inception`.

    Returns:
        An uncompiled Keras model following the contract in :mod:`catdog.models`.
    """
    inputs, x = inputs_and_rescale(image_size)
    x = conv_bn_act(x, stem_filters, 3, "stem_1", stride=2, activation=activation)  # S/2
    x = conv_bn_act(x, stem_filters, 3, "stem_2", activation=activation)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)  # S/4
    for s, (filters, blocks) in enumerate(zip(stage_filters, blocks_per_stage, strict=True), start=1):
        for b in range(1, blocks + 1):
            stride = 2 if (s > 1 and b == 1) else 1
            x = residual_block(x, filters, f"stage{s}_block{b}", stride=stride, activation=activation)
    features = layers.Activation("linear", name="features")(x)
    outputs = classifier_head(features, num_classes, dropout)
    return keras.Model(inputs, outputs, name=name)
