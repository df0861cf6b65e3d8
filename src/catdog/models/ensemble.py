"""Several trained networks as one model that keeps the serving contract.

An ensemble that averages its members' **logits** is itself a pooled Dense
head over their features put side by side:

    mean_i(W_i . gap(f_i) + b_i) = [W_1 / n; ...; W_n / n] . gap([f_1, ..., f_n]) + mean_i(b_i)

so the combined model has one ``features`` layer (the members' last
convolutional maps, concatenated) and one Dense ``predictions`` layer, like
every single network (see :mod:`catdog.models`): the app, both runtimes, the
LiteRT conversion and the class activation maps work on it unchanged, and
its heatmap is the members' heatmaps added up.

The members' maps have different sides (the ResNet's 4x4, the Inception's 7x7
at 112 px). Each is repeated up to a common side, the least common multiple
(28), by nearest-neighbour upsampling: an average over a map repeated k x k
times is the average over the map, so the pooling, and with it every
probability, is exactly that of the logit-averaging ensemble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def build_ensemble(members: Sequence, name: str = "ensemble"):
    """One model whose softmax is that of the members' averaged logits.

    Args:
        members: Trained Keras models that follow the contract of
            :mod:`catdog.models`, with the same input size and classes.
        name: The combined model's name (the architecture the app reports).

    Returns:
        A Keras model sharing the members' layers and weights.

    Raises:
        ValueError: Fewer than two members, or members that differ in input or classes.
    """
    import keras
    from keras import layers

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
    input_shapes = {tuple(m.input_shape[1:]) for m in members}
    classes = {m.output_shape[-1] for m in members}
    if len(input_shapes) != 1 or len(classes) != 1:
        raise ValueError(f"members must share input and classes, got inputs {input_shapes} and outputs {classes}")
    (input_shape,) = input_shapes
    image = keras.Input(shape=input_shape, name="image")
    maps = [
        keras.Model(m.inputs, m.get_layer("features").output, name=f"member{i}_{m.name}")(image)
        for i, m in enumerate(members, start=1)
    ]
    side = math.lcm(*(int(f.shape[1]) for f in maps))
    maps = [
        f if f.shape[1] == side else layers.UpSampling2D(side // int(f.shape[1]), name=f"member{i}_repeat")(f)
        for i, f in enumerate(maps, start=1)
    ]
    features = layers.Concatenate(name="features")(maps)
    pooled = layers.GlobalAveragePooling2D(name="avg_pool")(features)
    head = layers.Dense(classes.pop(), activation="softmax", name="predictions")
    outputs = head(pooled)
    heads = [m.get_layer("predictions").get_weights() for m in members]
    head.set_weights([np.concatenate([w for w, _ in heads]) / len(members), np.mean([b for _, b in heads], axis=0)])
    return keras.Model(image, outputs, name=name)
