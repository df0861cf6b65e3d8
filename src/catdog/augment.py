"""Random transforms of whole training batches, inside tf.data.

Every transform works on a batch of float32 pixels in 0..255 at once (one
``crop_and_resize`` call crops the whole batch), which keeps augmentation far
cheaper than the forward and backward pass on a 2-core CPU.

* **Random resized crop** with aspect jitter: users upload photos framed in
  every way, so the model sees a random part of each photo (a share of its
  area, in a range of aspect ratios) stretched back to the full side, as the
  app stretches every upload.
* **Low resolution**: a share of each batch is shrunk to a random side and
  scaled back up, with the same bilinear resize the app uses, so a blurry
  photo is not evidence for either class.
* Horizontal flip, brightness and contrast.
"""

from __future__ import annotations

import math


def augment_batch(images, aug, size: int, seed: int = 0):
    """Return an augmented copy of a batch.

    Args:
        images: ``(N, S, S, 3)`` float32 tensor of pixels in 0..255.
        aug: The :class:`catdog.config.AugmentationSettings`.
        size: Side of the output images.
        seed: Op-level seed, so a seeded run repeats.

    Returns:
        ``(N, size, size, 3)`` float32 pixels in 0..255.
    """
    import tensorflow as tf

    x = tf.cast(images, tf.float32)
    n = tf.shape(x)[0]
    x = random_resized_crop(x, size, aug.crop_scale, aug.crop_aspect, seed)
    if aug.flip:
        flip = tf.random.uniform([n, 1, 1, 1], seed=seed + 1) < 0.5
        x = tf.where(flip, tf.reverse(x, axis=[2]), x)
    if aug.low_res_share:
        x = random_low_resolution(x, aug.low_res_share, aug.low_res_sides, seed + 2)
    if aug.brightness:
        shift = tf.random.uniform([n, 1, 1, 1], -aug.brightness, aug.brightness, seed=seed + 3) * 255.0
        x = x + shift
    if aug.contrast:
        factor = tf.random.uniform([n, 1, 1, 1], 1.0 - aug.contrast, 1.0 + aug.contrast, seed=seed + 4)
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = (x - mean) * factor + mean
    return tf.clip_by_value(x, 0.0, 255.0)


def random_resized_crop(images, size: int, scale: tuple[float, float], aspect: tuple[float, float], seed: int = 0):
    """Crop a random box of each image and resize it to ``size`` (bilinear).

    Args:
        images: ``(N, H, W, 3)`` float32 tensor.
        size: Output side.
        scale: Range of the box's area as a share of the image's.
        aspect: Range of the box's width/height ratio (sampled on a log scale).
        seed: Op-level seed.

    Returns:
        ``(N, size, size, 3)`` float32 tensor.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    area = tf.random.uniform([n], scale[0], scale[1], seed=seed)
    ratio = tf.exp(tf.random.uniform([n], math.log(aspect[0]), math.log(aspect[1]), seed=seed + 10))
    # Box sides as fractions of the image; a side that would pass 1 is cut to 1.
    width = tf.minimum(1.0, tf.sqrt(area * ratio))
    height = tf.minimum(1.0, tf.sqrt(area / ratio))
    top = tf.random.uniform([n], seed=seed + 20) * (1.0 - height)
    left = tf.random.uniform([n], seed=seed + 30) * (1.0 - width)
    boxes = tf.stack([top, left, top + height, left + width], axis=1)
    return tf.image.crop_and_resize(images, boxes, tf.range(n), [size, size], method="bilinear")


def random_low_resolution(images, share: float, sides: tuple[int, int], seed: int = 0):
    """Shrink a random ``share`` of the images to one random side, then scale them back.

    The shrink is antialiased (like a camera or a thumbnail service); the way
    back up is plain bilinear, which is what the app does to a small upload.
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    full = tf.shape(images)[1:3]
    side = tf.random.uniform([], sides[0], sides[1] + 1, dtype=tf.int32, seed=seed)
    small = tf.image.resize(images, [side, side], method="bilinear", antialias=True)
    back = tf.image.resize(small, full, method="bilinear")
    chosen = tf.random.uniform([n, 1, 1, 1], seed=seed + 1) < share
    return tf.where(chosen, back, images)


def augmentation_layer(aug, seed: int = 0):
    """The same transforms as :func:`augment_batch`, as a Keras layer on any backend.

    :mod:`catdog.train_pack` puts it in front of the network, so the whole
    augmentation runs on the accelerator inside the compiled training step
    (tf.data is not there on JAX). It takes uint8 or float pixels in 0..255
    and returns float32; outside training it only casts.

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
            super().__init__(**kwargs)
            self.seed_generator = keras.random.SeedGenerator(seed)

        def compute_output_shape(self, input_shape):
            return input_shape

        def call(self, images, training=False):
            x = ops.cast(images, "float32")
            if not training:
                return x
            n, size = ops.shape(x)[0], x.shape[1]
            x = self._crop_and_flip(x, n, size)
            if aug.low_res_share:
                x = self._low_resolution(x, n, size)
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

        def _low_resolution(self, x, n, size):
            def shrunk(side):
                def branch(images):
                    small = ops.image.resize(images, (side, side), interpolation="bilinear", antialias=True)
                    return ops.image.resize(small, (size, size), interpolation="bilinear")

                return branch

            index = keras.random.randint((), 0, len(sides), seed=self.seed_generator)
            back = ops.switch(index, [shrunk(side) for side in sides], x)
            chosen = self._uniform((n, 1, 1, 1)) < aug.low_res_share
            return ops.where(chosen, back, x)

    return BatchAugment(name="augment")
