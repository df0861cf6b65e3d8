"""Small building blocks shared by both architectures."""

from __future__ import annotations

import keras
from keras import layers


def conv_bn_act(x, filters: int, kernel: int, name: str, stride: int = 1, activation: str = "relu"):
    """Conv2D ('same' padding, no bias) -> BatchNorm -> activation.

    Args:
        x: Input tensor.
        filters: Output depth.
        kernel: Square kernel side.
        name: Prefix for the three layers (``<name>_conv``, ``_bn``, ``_act``).
        stride: Convolution stride.
        activation: 'relu', 'leaky_relu' (alpha 0.01) or None for no activation.

    Returns:
        The output tensor.
    """
    x = layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=f"{name}_conv",
    )(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return activate(x, activation, f"{name}_act") if activation else x


def activate(x, activation: str, name: str):
    """Apply ReLU or Leaky ReLU (negative slope 0.01) as a named layer."""
    if activation == "relu":
        return layers.ReLU(name=name)(x)
    if activation == "leaky_relu":
        return layers.LeakyReLU(negative_slope=0.01, name=name)(x)
    raise ValueError(f"activation must be 'relu' or 'leaky_relu', got {activation!r}")


def inputs_and_rescale(image_size: int):
    """Model input of raw 0..255 pixels and its rescaling to [-1, 1] (``training.image_size`` >= 32 by config)."""
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    return inputs, x


def classifier_head(features, num_classes: int, dropout: float):
    """Global average pooling, dropout and the softmax ``predictions`` layer."""
    x = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if dropout > 0:
        x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(num_classes, activation="softmax", name="predictions")(x)
