"""One Dense head fitted over a composed model's features (``catdog train --ensemble A B --refit-head``).

An ensemble's head is its members' heads side by side, each trained alone
(:mod:`catdog.models.ensemble`). Fitting one Dense layer jointly over the
members' pooled features, with the networks frozen, lets each member's
features correct the other's blind spots: on the v3 pair it flagged as
many photos of neither at a 1% pet budget, with a better calibration
(validation ECE 1.20% against 1.42%; ``docs/model-v3-study.md``, sixth pass).

The fit also sees pictures the averaged heads never met together: the
generated non-photos of training (``training.synthetic_other``, same seed)
and plain one-colour pictures without noise
(:func:`catdog.data.synthetic.plain_pictures`). Without the latter, the
pair answered a plain white upload "Cat" under the pet budget.

The head is fitted on centred features divided by one scale (their
channels' mean spread), where one L2 weight suits every member, and then
folded into the model's ``predictions`` layer over the raw pooled features,
so the model keeps the serving contract and its size and speed. One scale
for all channels, not one each: per channel, nearly dead channels (spread
3e-4) were scaled up and got weights up to 21, a hundred times the rest,
and the int8 twin, whose kernel shares one range per class, lost the
other weights' precision (99.39% of labels kept, under the 99.5% it must
keep; ``docs/model-v3-study.md``, seventh pass).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from catdog.config import TrainingSettings
from catdog.errors import DatasetError
from catdog.labels import OTHER, other_index

log = logging.getLogger("catdog.training.head")

BATCH_SIZE = 256
LEARNING_RATE = 1e-3


def head_training_set(
    images: np.ndarray, labels: Sequence[int], classes: Sequence[str], training: TrainingSettings
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The training images plus the generated and the plain pictures, all labelled Other.

    Returns:
        Images, labels and how many pictures of each kind (``photos``, ``generated``, ``plain``).

    Raises:
        DatasetError: Pictures are to be added but there is no Other class.
    """
    from catdog.data.dataset import with_synthetic_other
    from catdog.data.synthetic import plain_pictures

    x, y = with_synthetic_other(images, labels, classes, training.synthetic_other, training.seed)
    count = training.head_refit.plain_pictures
    if count:
        index = other_index(classes)
        if index is None:
            raise DatasetError(f"training.head_refit.plain_pictures needs an {OTHER!r} class in data.classes")
        x = np.concatenate([x, plain_pictures(count, int(images.shape[1]), training.seed)])
        y = np.concatenate([y, np.full(count, index, dtype=np.int64)])
    kinds = {"photos": len(images), "generated": training.synthetic_other, "plain": count}
    return x, y, kinds


def pooled_features(model, images: np.ndarray, desc: str = "pooled features", batch_size: int = 128) -> np.ndarray:
    """The model's pooled ``features`` for uint8 images, in float32, with a progress bar.

    The feature extractor is built once per model and kept on it, for models scored part after part.
    """
    import keras
    from tqdm import tqdm

    from catdog.training import openset

    extractor = getattr(model, "_catdog_features", None)
    if extractor is None:
        extractor = keras.Model(model.inputs, model.get_layer("features").output)
        model._catdog_features = extractor
    out = np.empty((len(images), extractor.output_shape[-1]), dtype=np.float32)
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        batch = images[start : start + batch_size].astype(np.float32)
        out[start : start + len(batch)] = openset.pooled(extractor([batch], training=False))
    return out


def fit_dense(
    features: np.ndarray, labels: np.ndarray, classes: int, l2: float, epochs: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """A softmax Dense layer fitted on centred features over one scale, folded back over the raw ones.

    The L2 penalty then weighs every channel's weight alike, so a channel
    that barely varies cannot earn a large one (see the module's notes).

    Returns:
        ``kernel`` and ``bias`` such that ``features @ kernel + bias`` are the fitted logits.
    """
    import keras

    mean = features.mean(axis=0)
    scale = np.full(features.shape[1], features.std(axis=0).mean() + 1e-6, dtype=np.float64)
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features.shape[1],))
    dense = keras.layers.Dense(classes, kernel_regularizer=keras.regularizers.l2(l2))
    model = keras.Model(inputs, dense(inputs))
    model.compile(keras.optimizers.Adam(LEARNING_RATE), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit((features - mean) / scale, labels, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0)
    return fold(*dense.get_weights(), mean, scale)


def fold(kernel: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Dense layer over raw features equal to ``kernel, bias`` over ``(features - mean) / scale``.

    ``scale`` has one entry per channel (here all the same).
    """
    return kernel / scale[:, None], bias - (mean / scale) @ kernel


def refit_head(
    model, images: np.ndarray, labels: Sequence[int], classes: Sequence[str], training: TrainingSettings
) -> dict:
    """Fit the model's ``predictions`` layer anew on its pooled features; the rest stays frozen.

    Args:
        model: A model that follows the contract of :mod:`catdog.models` (an ensemble, typically).
        images: The training part, uint8, at the model's input size.
        labels: Their class indices.
        classes: The class names, in order.
        training: ``head_refit`` (L2, epochs, plain pictures), ``synthetic_other`` and ``seed``.

    Returns:
        What was done, for the model's metrics: settings, pictures of each kind, seconds and
        the head's accuracy on what it was fitted on.
    """
    started = time.monotonic()
    x, y, kinds = head_training_set(images, labels, classes, training)
    log.info("refitting the head on %d pictures (%s)", len(x), kinds)
    features = pooled_features(model, x, "features for the head")
    del x
    refit = training.head_refit
    kernel, bias = fit_dense(features, y, len(classes), refit.l2, refit.epochs, training.seed)
    layer = model.get_layer("predictions")
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    fitted = float(((features @ kernel + bias).argmax(axis=1) == y).mean())
    seconds = time.monotonic() - started
    log.info("head refitted in %.0f s, accuracy %.4f on its own pictures", seconds, fitted)
    return {**refit.model_dump(), "pictures": kinds, "seconds": round(seconds, 1), "fitted_accuracy": fitted}
