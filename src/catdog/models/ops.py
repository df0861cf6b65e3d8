"""Counting the cost of convolutions, and the output-size formula.

These reproduce the arithmetic behind the Inception design: a 1x1
"bottleneck" convolution before an expensive 5x5 cuts its multiplications
about tenfold.
"""

from __future__ import annotations

import math


def output_size(size: int, kernel: int, stride: int = 1, padding: str = "valid") -> int:
    """Spatial output size of a convolution or pooling window.

    'valid' uses (W - f) / S + 1 (floored); 'same' pads so the output is
    ceil(W / S), which keeps the size when S = 1.

    Args:
        size: Input width (or height) W.
        kernel: Window size f.
        stride: Step S.
        padding: 'valid' or 'same'.

    Returns:
        The output width (or height).

    Raises:
        ValueError: On a non-positive argument, an unknown padding, or a
            window larger than a 'valid' input.
    """
    if size <= 0 or kernel <= 0 or stride <= 0:
        raise ValueError(f"size, kernel and stride must be positive, got {size}, {kernel}, {stride}")
    if padding == "same":
        return math.ceil(size / stride)
    if padding == "valid":
        if kernel > size:
            raise ValueError(f"a {kernel}-wide window does not fit a {size}-wide 'valid' input")
        return (size - kernel) // stride + 1
    raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")


def conv_multiplications(
    height: int,
    width: int,
    in_channels: int,
    filters: int,
    kernel: int,
    stride: int = 1,
    padding: str = "same",
) -> int:
    """Multiplications of one convolution layer (bias additions not counted).

    Each output value costs kernel x kernel x in_channels multiplications.

    Args:
        height: Input height.
        width: Input width.
        in_channels: Input depth.
        filters: Number of filters (output depth).
        kernel: Square kernel side.
        stride: Step.
        padding: 'same' or 'valid'.

    Returns:
        The number of multiplications.
    """
    out_h = output_size(height, kernel, stride, padding)
    out_w = output_size(width, kernel, stride, padding)
    return out_h * out_w * filters * kernel * kernel * in_channels


def model_multiplications(model) -> int:
    """Multiplications of all Conv2D and Dense layers of a built Keras model."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, in_h, in_w, in_c = layer.input.shape
            kh, kw = layer.kernel_size
            _, out_h, out_w, out_c = layer.output.shape
            total += out_h * out_w * out_c * kh * kw * in_c
        elif kind == "Dense":
            total += layer.input.shape[-1] * layer.units
    return int(total)
