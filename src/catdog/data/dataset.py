"""From the validated manifest to training batches.

The split is seeded, stratified and by file, and it is saved so that every
later step (resume, evaluate) sees exactly the same test part. Images are
decoded once with the shared preprocessing function and cached as one uint8
array per split; augmentation then runs on whole batches inside tf.data.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from catdog import paths
from catdog.config import Settings
from catdog.data.parallel import ordered_map
from catdog.data.validate import read_manifest
from catdog.dirs import atomic_write, file_sha256, write_json_atomic
from catdog.errors import DatasetError, InvalidImage
from catdog.labels import OTHER, other_index
from catdog.serving.preprocess import load_image

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
_PARALLEL_MIN_IMAGES = 256  # below this, starting decoding processes costs more than it saves


@dataclass(frozen=True)
class Split:
    """File lists of the three parts, with integer labels (index into classes)."""

    classes: tuple[str, ...]
    files: dict[str, list[str]]
    labels: dict[str, list[int]]

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each part."""
        return {part: {name: self.labels[part].count(i) for i, name in enumerate(self.classes)} for part in SPLITS}


def source_of(path: str | Path) -> str:
    """The collection a file came from, for stratified splits and per-source figures.

    A path relative to the dataset folder is ``<archive>/<folder>/<class>/<file>``.
    Files whose name starts with a word and an underscore (``flowers_0012.jpg``,
    ``cal101_chair_01.webp``: letters, then letters or digits) come from the
    source that word names within their folder (``Extra/flowers``, ``Broad/cal101``);
    other files (``PetImages/Cat/12.jpg``) from the folder itself (``PetImages``).
    """
    parts = PurePosixPath(Path(path).as_posix()).parts
    folder = parts[-3] if len(parts) >= 3 else ""
    prefix, sep, _ = parts[-1].partition("_")
    if sep and prefix[:1].isalpha() and prefix.isalnum():
        return f"{folder}/{prefix}" if folder else prefix
    return folder or "dataset"


def make_split(
    files_by_class: dict[str, Sequence[str | Path]],
    classes: Sequence[str],
    validation_fraction: float,
    test_fraction: float,
    seed: int,
) -> Split:
    """Shuffle each class and source with ``seed`` and cut it into train/validation/test.

    Stratifying by source as well as class keeps every collection (PetImages,
    Oxford pets, each kind of Other photo) in the same proportions in every
    part, so per-source test figures exist and mean the same thing.

    Args:
        files_by_class: Paths of the valid images of each class.
        classes: Class names; a file's label is its class's index here.
        validation_fraction: Share of each class and source for validation.
        test_fraction: Share of each class and source for the test part.
        seed: Seed of the shuffle; the same inputs always give the same split.

    Returns:
        The split.

    Raises:
        DatasetError: A class is missing or too small to give every part a file.
    """
    files: dict[str, list[str]] = {part: [] for part in SPLITS}
    labels: dict[str, list[int]] = {part: [] for part in SPLITS}
    for label, name in enumerate(classes):
        paths = sorted(str(p) for p in files_by_class.get(name, ()))
        if len(paths) < 3:
            raise DatasetError(f"class {name!r} has {len(paths)} valid images; at least 3 are needed to split")
        by_source: dict[str, list[str]] = {}
        for path in paths:
            by_source.setdefault(source_of(path), []).append(path)
        for source, group in sorted(by_source.items()):
            # A whole-folder source (PetImages) keeps the seed string of the
            # class-only split of version 1, so its photos fall into exactly the
            # same parts as before and a v1 model can be fine-tuned without
            # ever having trained on a v2 test photo.
            key = f"{seed}:{name}" if "/" not in source else f"{seed}:{name}:{source}"
            random.Random(key).shuffle(group)
            n_test = max(1, round(len(group) * test_fraction)) if len(group) >= 3 else 0
            n_val = max(1, round(len(group) * validation_fraction)) if len(group) >= 3 else 0
            parts = {
                "test": group[:n_test],
                "validation": group[n_test : n_test + n_val],
                "train": group[n_test + n_val :],
            }
            for part, chosen in parts.items():
                files[part].extend(chosen)
                labels[part].extend([label] * len(chosen))
        if label not in labels["train"]:
            raise DatasetError(f"class {name!r} has no images left for training after the split")
    return Split(tuple(classes), files, labels)


def save_split(split: Split, path: Path) -> None:
    """Write the split as JSON (atomically)."""
    payload = {"classes": list(split.classes), "files": split.files, "labels": split.labels}
    write_json_atomic(path, payload)


def load_split(path: Path) -> Split:
    """Read a split written by :func:`save_split`."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
        return Split(tuple(payload["classes"]), payload["files"], payload["labels"])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"cannot read split file {str(path)!r}: {exc}") from exc


def prepare_split(settings: Settings) -> tuple[Split, Path, str]:
    """Make the split from the manifest and save it to ``<artifacts>/split.json``.

    The split is made from paths relative to the dataset folder, so the same
    data and seed give the same split wherever the data was extracted.

    Returns:
        The split (relative paths), the dataset folder and the manifest's sha256.

    Raises:
        DatasetError: The saved split holds back photos these settings would train on.
    """
    manifest = paths.manifest(settings.data.artifacts_dir)
    root, files_by_class = read_manifest(manifest)
    relative = {name: [Path(p).relative_to(root).as_posix() for p in paths] for name, paths in files_by_class.items()}
    manifest_hash = file_sha256(manifest)
    t = settings.training
    split = make_split(relative, settings.data.classes, t.validation_fraction, t.test_fraction, t.seed)
    split_file = paths.split(settings.data.artifacts_dir)
    if split_file.exists():
        saved = load_split(split_file)
        # New files (a new archive) may join any part; a photo already held back must never be trained on,
        # or every later test figure would be flattered. A changed training.seed or fraction does that.
        held_back = set(saved.files["validation"]) | set(saved.files["test"])
        leaked = held_back.intersection(split.files["train"])
        if leaked:
            raise DatasetError(
                f"these settings would train on {len(leaked)} photos that the saved split {split_file} holds back "
                "for validation or testing (training.seed, validation_fraction or test_fraction changed?); "
                "keep the settings that made it, or delete the file to split afresh"
            )
        if saved.files["test"] != split.files["test"]:
            log.warning("the saved split %s differs from the one the settings give; replacing it", split_file)
    save_split(split, split_file)
    return split, root, manifest_hash


def load_arrays(settings: Settings, split: Split, root: Path) -> dict:
    """Each part of the split decoded at ``training.image_size``, through the array cache."""
    cache = paths.cache_dir(settings.data.artifacts_dir)
    return {
        part: cached_arrays([str(root / f) for f in files], settings.training.image_size, cache, part)
        for part, files in split.files.items()
    }


def _decode(args: tuple[str, int]) -> np.ndarray | str:
    path, size = args
    try:
        return load_image(path, size)
    except (InvalidImage, OSError) as exc:
        return f"{path}: {exc}"


def decode_images(paths: Sequence[str], size: int, desc: str = "decoding", workers: int | None = None) -> np.ndarray:
    """Decode images into one ``(N, size, size, 3)`` uint8 array, with a progress bar on a terminal.

    Args:
        paths: The image files.
        size: The side every image is resized to.
        desc: The progress bar's label.
        workers: Decoding processes; None: one per CPU.

    Raises:
        DatasetError: A file no longer decodes (the data changed since validation).
    """
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    jobs = [(str(p), size) for p in paths]
    results = ordered_map(
        _decode, jobs, workers=workers, min_parallel=_PARALLEL_MIN_IMAGES, desc=desc, unit="img", progress=None
    )
    for i, result in enumerate(results):
        if isinstance(result, str):
            raise DatasetError(f"image failed to decode since validation: {result}")
        out[i] = result
    return out


def cached_arrays(paths: Sequence[str], size: int, cache_dir: Path, part: str) -> np.ndarray:
    """Decode ``paths`` once and keep the array as ``.npy`` keyed by files and size."""
    key = hashlib.sha256(("\n".join(paths) + f"\n{size}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{part}-{size}px-{key}.npy"
    if cache.exists():
        log.info("using cached %s images from %s", part, cache)
        return np.load(cache)
    arrays = decode_images(paths, size, desc=f"decoding {part}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache) as tmp:
        np.save(tmp, arrays)
    return arrays


def shorter_sides(paths: Sequence[str]) -> np.ndarray:
    """Each image's shorter side in pixels as stored, read from its header only.

    Training uses it to tell natively small photos from large ones, which the
    decoded arrays (all stretched to one side) no longer show.

    Raises:
        DatasetError: A file no longer opens (the data changed since validation).
    """
    from PIL import Image, UnidentifiedImageError

    sides = np.empty(len(paths), dtype=np.int32)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                sides[i] = min(image.size)
        except (OSError, UnidentifiedImageError) as exc:
            raise DatasetError(f"image failed to open since validation: {path}: {exc}") from exc
    return sides


def tf_dataset(
    images: np.ndarray,
    labels: Sequence[int],
    num_classes: int,
    batch_size: int,
    training: bool,
    aug=None,
    seed: int = 0,
    sample_weights: np.ndarray | None = None,
    low_res_shares: np.ndarray | None = None,
    targets: np.ndarray | None = None,
):
    """Batches of (float32 pixels 0..255, one-hot labels or ``targets``[, sample weights]).

    When training, batches are shuffled and augmented by the layer of
    :func:`catdog.data.augment.augmentation_layer`, each image shrunk with its chance
    from ``low_res_shares`` when given (see :func:`catdog.data.augment.low_res_shares`).
    With ``sample_weights`` (one per example, see :func:`example_weights`), each example also carries its loss weight.
    ``targets`` (``(N, num_classes)`` rows summing to 1, e.g. a teacher's blended
    answers, see :mod:`catdog.training.distill`) replace the one-hot labels.
    """
    import tensorflow as tf

    labels = np.asarray(labels, dtype=np.int64)
    targets = np.eye(num_classes, dtype=np.float32)[labels] if targets is None else np.asarray(targets, np.float32)
    augmenting = training and aug is not None
    if low_res_shares is None or not augmenting:
        low_res_shares = np.full(len(labels), aug.low_res_share if augmenting else 0.0, dtype=np.float32)
    columns = (images, np.asarray(low_res_shares, dtype=np.float32), targets)
    if sample_weights is not None:
        columns += (np.asarray(sample_weights, dtype=np.float32),)
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augmenting:
        from catdog.data.augment import augmentation_layer

        layer = augmentation_layer(aug, seed)
        ds = ds.map(lambda x, share, *rest: (layer(x, training=True, low_res_share=share), *rest))
    else:
        ds = ds.map(lambda x, share, *rest: (tf.cast(x, tf.float32), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def class_weights(labels: Sequence[int], num_classes: int, power: float) -> list[float]:
    """Loss weight per class, ``(1 / share) ** power``, scaled so the mean example weighs 1.

    ``power`` 0 weighs every example alike; 1 makes every class count the same
    in the loss however many examples it has.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    share = np.maximum(counts, 1) / max(1, counts.sum())
    weights = share**-power
    weights /= (weights * share).sum()
    return [float(w) for w in weights]


def example_weights(
    labels: Sequence[int], weights: Sequence[float], other: int | None, multipliers: np.ndarray | None = None
) -> np.ndarray:
    """Each example's loss weight: its class's, times its multiplier if it is a photo of neither.

    Args:
        labels: Each example's class index.
        weights: Each class's loss weight (:func:`class_weights`).
        other: The Other class's index, or None when there is none (multipliers are then ignored).
        multipliers: One per example (only the Other examples' are read), or None for all 1.
            They are scaled to a mean of 1 over the Other examples, so the class keeps its total
            weight and only the balance inside it moves.

    Returns:
        A float32 array, one weight per example.
    """
    labels = np.asarray(labels, dtype=np.int64)
    per_example = np.asarray(weights, dtype=np.float64)[labels]
    if multipliers is not None and other is not None:
        mine = labels == other
        if mine.any():
            scale = np.asarray(multipliers, dtype=np.float64)[mine]
            per_example[mine] *= scale / scale.mean()
    return per_example.astype(np.float32)


def with_synthetic_other(
    images: np.ndarray, labels: Sequence[int], classes: Sequence[str], count: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """The training images and labels plus ``count`` generated pictures labelled :data:`catdog.labels.OTHER`.

    See :mod:`catdog.data.synthetic`. With ``count`` 0 the arrays come back as they were.

    Raises:
        DatasetError: ``count`` is positive but there is no Other class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not count:
        return images, labels
    # Checked here, when training starts, rather than in config.py: a config that only serves a two-class model
    # need not change training.synthetic_other.
    index = other_index(classes)
    if index is None:
        raise DatasetError(f"training.synthetic_other needs an {OTHER!r} class in data.classes")
    from catdog.data.synthetic import synthetic_images

    drawn, _ = synthetic_images(count, int(images.shape[1]), seed)
    other = np.full(count, index, dtype=np.int64)
    return np.concatenate([images, drawn]), np.concatenate([labels, other])
