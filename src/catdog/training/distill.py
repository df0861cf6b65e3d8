"""Distillation: a single network trained on an ensemble's answers (``catdog train --distill-from``).

An ensemble is better than each of its members but costs their sum to serve.
A student trained toward the ensemble's probabilities learns more from each
pet photo than from its label alone: how cat-like a dog looks, how sure the
label is. So the student's targets for cats and dogs blend the teacher's
probabilities with the true label (``training.distill_weight`` is the
teacher's share); photos of neither keep their true label by default, because
the teacher is weakest exactly there (a teacher that calls a horse a dog must
not pass that on). ``training.distill_other`` blends the teacher in for them
too, so that Other's targets are as soft as the pets' (with Other's label hard
and some Other in every pet's target, the fifth pass's student leaned to Other;
the thirteenth pass's, with this on, leaned to Other all the same).

The teacher sees each training photo once, unaugmented; the student then
learns that answer from every augmented view of the photo, shrunk ones
included, which also asks it to give a small photo the answer the large one
gets. The teacher's probabilities are kept in the array cache, keyed by the
teacher's file and the training files, so a resumed or repeated run does not
recompute them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catdog.dirs import atomic_write, file_sha256

log = logging.getLogger(__name__)


def soft_targets(
    labels: Sequence[int], teacher: np.ndarray, num_classes: int, other: int | None, weight: float
) -> np.ndarray:
    """Training targets: the teacher's probabilities blended in for every photo not labelled Other.

    Args:
        labels: True class index of each photo.
        teacher: ``(N, num_classes)`` teacher probabilities for the same photos.
        num_classes: Number of classes.
        other: Index of the Other class (its photos keep their one-hot label), or None.
        weight: The teacher's share in the blended targets, 0..1.

    Returns:
        ``(N, num_classes)`` float32 rows summing to 1.

    Raises:
        ValueError: The teacher's probabilities do not match the labels in shape, or ``weight`` is outside 0..1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    teacher = np.asarray(teacher, dtype=np.float32)
    if teacher.shape != (len(labels), num_classes):
        raise ValueError(f"teacher probabilities of shape {teacher.shape} for {len(labels)} labels of {num_classes}")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the teacher's share must be between 0 and 1, got {weight}")
    targets = np.eye(num_classes, dtype=np.float32)[labels]
    # Renormalised, so rounding in a float16 or bfloat16 teacher cannot make a row sum past 1.
    taught = teacher / np.maximum(teacher.sum(axis=1, keepdims=True), 1e-12)
    blended = labels != other if other is not None else np.ones(len(labels), dtype=bool)
    targets[blended] = weight * taught[blended] + (1.0 - weight) * targets[blended]
    return targets


def teacher_probabilities(teacher_file: Path, images: np.ndarray, files: Sequence[str], cache_dir: Path) -> np.ndarray:
    """The teacher model's probabilities for ``images``, computed once and cached.

    Args:
        teacher_file: A trained ``.h5`` model (one network or an ensemble) with the student's classes.
        images: ``(N, size, size, 3)`` uint8 photos.
        files: The photos' files, in the same order (part of the cache key).
        cache_dir: The array cache folder.

    Returns:
        ``(N, num_classes)`` float32 probabilities.
    """
    key = hashlib.sha256(
        (file_sha256(teacher_file) + "\n" + "\n".join(files) + f"\n{images.shape}").encode()
    ).hexdigest()[:16]
    cache = Path(cache_dir) / f"teacher-{key}.npy"
    if cache.exists():
        log.info("using the teacher's cached probabilities from %s", cache)
        return np.load(cache)
    import keras

    from catdog.training.results import predict_in_batches

    log.info("the teacher %s answers %d training photos once", teacher_file, len(images))
    probabilities = predict_in_batches(keras.models.load_model(teacher_file, compile=False), images).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache) as tmp:
        np.save(tmp, probabilities)
    return probabilities
