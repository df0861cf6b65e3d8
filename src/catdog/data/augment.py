"""Random transforms of whole training batches: one Keras layer for every backend.

The same layer augments batches inside tf.data when ``catdog.training.train`` trains
with TensorFlow, and inside the compiled step when a run trains on JAX (see
:mod:`catdog.training.train_pack`), so both see the same pictures. Every transform
works on a batch of float32 pixels in 0..255 at once, which keeps
augmentation far cheaper than the forward and backward pass on a 2-core CPU.

* **Random resized crop** with aspect jitter: users upload photos framed in
  every way, so the model sees a random part of each photo (a share of its
  area, in a range of aspect ratios) stretched back to the full side, as the
  app stretches every upload.
* **Low resolution**: a share of each batch is shrunk to a small side and
  scaled back up, the way the app scales a small upload, so that blur is no
  evidence for a class. The share may differ per image:
  :func:`low_res_shares` gives each class as many small pictures as the class
  that has the most natively small photos (the Broad photos of neither are
  mostly 64 px, the pets mostly 160-180 px; with one share for all, a network
  learns "small means neither").
* Horizontal flip, brightness and contrast.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def natively_small(shorter_sides: Sequence[int], aug) -> np.ndarray:
    """Whether each photo was small before decoding: its shorter side under the top of ``aug.low_res_sides``.

    Training balances these against shrunk large photos (:func:`low_res_shares`), and a pet budget
    leaves them out (``training.max_pets_as_other``): one rule for both.

    Args:
        shorter_sides: Each photo's shorter side as stored (:func:`catdog.data.dataset.shorter_sides`).
        aug: The :class:`catdog.config.AugmentationSettings`.
    """
    return np.asarray(shorter_sides) < aug.low_res_sides[1]


def low_res_shares(labels: Sequence[int], small: Sequence[bool], share: float, balance: bool) -> np.ndarray:
    """Each training image's chance of being shrunk, so that size tells no class apart.

    Without ``balance`` every image gets ``share``. With it, the target is the
    share of small pictures (natively small, or shrunk) that the class with
    the most natively small photos has when its large photos get ``share``;
    every class's large photos are shrunk often enough to reach that target.
    Natively small photos keep ``share`` (shrinking them further still varies
    their size).

    Args:
        labels: Class index of each image.
        small: Whether each image was small before decoding (its shorter side
            under the top of ``low_res_sides``).
        share: The configured ``low_res_share``.
        balance: The configured ``balance_low_res``.

    Returns:
        ``(N,)`` float32 probabilities.
    """
    labels = np.asarray(labels, dtype=np.int64)
    small = np.asarray(small, dtype=bool)
    shares = np.full(len(labels), share, dtype=np.float32)
    if not balance or not len(labels):
        return shares
    classes = np.unique(labels)
    native = {c: small[labels == c].mean() for c in classes}
    most = max(native.values())
    target = most + (1.0 - most) * share
    for c in classes:
        if native[c] < 1.0:
            large = (labels == c) & ~small
            shares[large] = (target - native[c]) / (1.0 - native[c])
    return shares


def augmentation_layer(aug, seed: int = 0):
    """The training transforms as a Keras layer on any backend.

    It takes uint8 or float pixels in 0..255 and returns float32; outside
    training it only casts. Called with ``low_res_share`` (an ``(N,)`` tensor
    of per-image chances, see :func:`low_res_shares`), that replaces
    ``aug.low_res_share`` for the batch.

    The crop and the flip are one affine map per image; the low-resolution
    side is one of a few fixed sides per batch (a compiled step needs static
    shapes), spread over ``aug.low_res_sides``.

    Args:
        aug: The :class:`catdog.config.AugmentationSettings`.
        seed: Seed of the layer's random stream.

    Returns:
        A ``keras.layers.Layer``.
    """
    import keras
    from keras import ops

    low, high = aug.low_res_sides
    sides = sorted({int(round(low * (high / low) ** (i / 5))) for i in range(6)})

    class BatchAugment(keras.layers.Layer):
        def __init__(self, **kwargs):
            # float32 whatever the global policy: bfloat16 cannot hold every pixel value 0..255.
            super().__init__(dtype="float32", **kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def compute_output_shape(self, input_shape):
            return input_shape

        def call(self, images, training=False, low_res_share=None):
            x = ops.cast(images, "float32")
            if not training:
                return x
            n, size = ops.shape(x)[0], x.shape[1]
            x = self._crop_and_flip(x, n, size)
            if low_res_share is not None or aug.low_res_share:
                share = aug.low_res_share if low_res_share is None else ops.reshape(low_res_share, (-1, 1, 1, 1))
                x = self._low_resolution(x, n, size, share)
            if aug.brightness:
                x = x + self._uniform((n, 1, 1, 1), -aug.brightness, aug.brightness) * 255.0
            if aug.contrast:
                mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
                x = (x - mean) * self._uniform((n, 1, 1, 1), 1.0 - aug.contrast, 1.0 + aug.contrast) + mean
            return ops.clip(x, 0.0, 255.0)

        def _uniform(self, shape, low=0.0, high=1.0):
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)

        def _crop_and_flip(self, x, n, size):
            area = self._uniform((n,), *aug.crop_scale)
            ratio = ops.exp(self._uniform((n,), math.log(aug.crop_aspect[0]), math.log(aug.crop_aspect[1])))
            # Box sides as fractions of the image; a side that would pass 1 is cut to 1.
            width = ops.minimum(1.0, ops.sqrt(area * ratio))
            height = ops.minimum(1.0, ops.sqrt(area / ratio))
            top = self._uniform((n,)) * (1.0 - height) * size
            left = self._uniform((n,)) * (1.0 - width) * size
            # Output pixel (col, row) reads input (left + col * width, top + row * height);
            # a flipped image reads its box from the right edge leftwards.
            flip = self._uniform((n,)) < (0.5 if aug.flip else 0.0)
            x_scale = ops.where(flip, -width, width)
            x_offset = ops.where(flip, left + (size - 1) * width, left)
            zero = ops.zeros_like(width)
            transform = ops.stack([x_scale, zero, x_offset, zero, height, top, zero, zero], axis=1)
            return ops.image.affine_transform(x, transform, interpolation="bilinear", fill_mode="nearest")

        def _low_resolution(self, x, n, size, share):
            # The shrink is antialiased (like a camera or a thumbnail service); the way
            # back up is plain bilinear, which is what the app does to a small upload.
            def shrunk(side):
                def branch(images):
                    small = ops.image.resize(images, (side, side), interpolation="bilinear", antialias=True)
                    return ops.image.resize(small, (size, size), interpolation="bilinear")

                return branch

            index = keras.random.randint((), 0, len(sides), seed=self.seed_generator)
            back = ops.switch(index, [shrunk(side) for side in sides], x)
            chosen = self._uniform((n, 1, 1, 1)) < share
            return ops.where(chosen, back, x)

    return BatchAugment(name="augment")
