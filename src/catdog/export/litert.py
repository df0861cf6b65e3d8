"""Convert ``model.h5`` to ``model.tflite`` for LiteRT serving, and prove the two agree.

``.h5`` stays the artifact training writes and ships; the ``.tflite`` is a
derived twin that :mod:`catdog.serving.runtime` serves without TensorFlow. The twin
has one input, ``image`` (``(N, S, S, 3)`` float pixels 0..255), and two
outputs: ``probabilities`` and ``features`` (the last convolutional stage,
from which the heatmap is computed). Its record ``model.tflite.json`` names the
sha256 of the ``.h5`` it came from (a twin of another model is never served),
the sha256 of the ``.tflite`` itself, the Dense head's weights, and what the
check measured.

The check runs both the Keras model and the LiteRT interpreter on the same
images (at least :data:`MIN_CHECK_IMAGES`, from the validation part of the
saved split when there is one) and refuses the twin if any probability
differs by more than :data:`TOLERANCE`, or if the head rebuilt from
``features`` does not give the same probabilities (then the map LiteRT
draws would not be the model's Grad-CAM).

The int8 twin (:mod:`catdog.export.quantize`) goes through the same converter
(:func:`to_tflite` with a representative set) and is a :class:`Conversion` too.

Importing this module is cheap; converting needs TensorFlow and ai-edge-litert.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from catdog import paths
from catdog.dirs import atomic_write, file_sha256
from catdog.errors import DatasetError, InvalidImage, ModelError
from catdog.paths import litert_paths
from catdog.serving.runtime import (
    FEATURES_LAYER,
    FEATURES_OUTPUT,
    INPUT_NAME,
    LITERT_FORMAT,
    PREDICTIONS_LAYER,
    PROBABILITIES_OUTPUT,
)

log = logging.getLogger(__name__)

TOLERANCE = 1e-4
MIN_CHECK_IMAGES = 200
CHECK_IMAGES = 256
_BATCH = 64


class ConversionError(ModelError):
    """The converted model does not agree with the ``.h5`` closely enough to be served."""


@dataclasses.dataclass(frozen=True)
class Conversion:
    """A checked ``.tflite`` twin, ready to be written.

    Attributes:
        tflite: The flatbuffer bytes.
        record: What ``model.tflite.json`` holds (without the sha256 of the file it is written beside).
    """

    tflite: bytes | None
    record: dict[str, Any]

    def files(self, model_name: str) -> dict[str, bytes]:
        """The twin's files by name, for a model file named ``model_name``: the ``.tflite`` and its record.

        The record names the ``.tflite``'s sha256. A twin refused by its check
        (``tflite`` is ``None``) is its record alone, which says why.
        """
        tflite_name, record_name = (path.name for path in litert_paths(model_name, self.precision))
        record = dict(self.record)
        files = {}
        if self.tflite is not None:
            files[tflite_name] = self.tflite
            record["sha256"] = hashlib.sha256(self.tflite).hexdigest()
        files[record_name] = (json.dumps(record, indent=1) + "\n").encode("utf-8")
        return files

    @property
    def precision(self) -> str:
        """``float`` or ``int8``."""
        return self.record.get("precision", "float")


def convert(
    model_path: str | os.PathLike,
    images: np.ndarray | None = None,
    *,
    source: str = "given",
    artifacts_dir: str | os.PathLike | None = None,
    tolerance: float = TOLERANCE,
    min_images: int = MIN_CHECK_IMAGES,
) -> Conversion:
    """Convert a ``.h5`` model for LiteRT and check the result on ``images``.

    Args:
        model_path: The Keras ``.h5`` model (the catdog contract).
        images: ``(N, S, S, 3)`` uint8 images to compare both models on;
            ``None`` takes them from :func:`check_images` (the validation
            split saved in ``artifacts_dir``, else generated).
        source: Where ``images`` come from, recorded (``validation split``...).
        artifacts_dir: Folder of ``split.json`` and ``manifest.json``, when ``images`` is ``None``.
        tolerance: Largest accepted absolute difference of a probability.
        min_images: Fewest images the check accepts.

    Returns:
        The twin and its record.

    Raises:
        ModelError: The model cannot be loaded or breaks the contract.
        ConversionError: Too few check images, or the twin disagrees with the model.
    """

    from catdog.serving.runtime import check_contract, load_keras_model

    path = Path(model_path)
    model = load_keras_model(path)
    num_classes = int(model.output_shape[-1])
    size = check_contract(model, path, num_classes)
    if images is None:
        artifacts = Path(artifacts_dir) if artifacts_dir is not None else None
        images, source = check_images(artifacts, size, max(CHECK_IMAGES, min_images))
    if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 of shape (N, {size}, {size}, 3), got {images.dtype} {images.shape}")
    if len(images) < min_images:
        raise ConversionError(f"the conversion check needs at least {min_images} images, got {len(images)}")

    twin, tflite = to_tflite(model, path, size)
    expected, got, features = _run_both(twin, tflite, images)

    kernel, bias = head_weights(model)
    difference = float(np.abs(got - expected).max())
    head_difference = float(np.abs(_pooled_head(features, kernel, bias) - got).max())
    log.info(
        "LiteRT twin of %s: max |p_litert - p_keras| = %.2e, head rebuilt from features %.2e, on %d images (%s)",
        path.name,
        difference,
        head_difference,
        len(images),
        source,
    )
    _check_agreement(path.name, difference, head_difference, tolerance, len(images))
    check = {
        "images": len(images),
        "source": source,
        "tolerance": tolerance,
        "max_abs_difference": difference,
        "head_max_abs_difference": head_difference,
    }
    return Conversion(tflite, twin_record(model, path, size, features.shape[1:], check))


def head_weights(model) -> tuple[np.ndarray, np.ndarray]:
    """The Dense head's float32 kernel ``(C, K)`` and bias ``(K,)`` (zeros when it has none)."""
    head = model.get_layer(PREDICTIONS_LAYER)
    kernel = np.asarray(head.kernel, dtype=np.float32)
    bias = np.asarray(head.bias, dtype=np.float32) if head.bias is not None else np.zeros(kernel.shape[1], np.float32)
    return kernel, bias


def twin_record(
    model, path: Path, size: int, features_shape: tuple, check: dict, precision: str = "float"
) -> dict[str, Any]:
    """What a twin's record says of it (all but the sha256 of the ``.tflite`` itself)."""
    import keras
    import tensorflow as tf

    num_classes = int(model.output_shape[-1])
    kernel, bias = head_weights(model)
    return {
        "format": LITERT_FORMAT,
        "precision": precision,
        "architecture": model.name,
        "parameters": int(model.count_params()),
        "source": path.name,
        "source_sha256": file_sha256(path),
        "input_size": size,
        "num_classes": num_classes,
        "outputs": {PROBABILITIES_OUTPUT: [None, num_classes], FEATURES_OUTPUT: [None, *features_shape]},
        "check": check,
        "converted_with": {"tensorflow": tf.__version__, "keras": keras.__version__},
        # float32 -> Python float -> JSON text round-trips exactly.
        "head": {"kernel": kernel.tolist(), "bias": bias.tolist()},
    }


def _check_agreement(name: str, difference: float, head_difference: float, tolerance: float, count: int) -> None:
    """Refuse a twin whose probabilities, or whose head rebuilt from its features, differ by more than ``tolerance``."""
    if not difference <= tolerance:
        raise ConversionError(
            f"the LiteRT twin of {name} differs from it by {difference:.2e} in probability "
            f"(more than {tolerance:g}) on {count} images; model.tflite not written"
        )
    if not head_difference <= tolerance:
        raise ConversionError(
            f"{name}'s head is not global average pooling then Dense (rebuilding it from "
            f"{FEATURES_LAYER!r} is off by {head_difference:.2e}), so LiteRT cannot draw its "
            f"Grad-CAM; model.tflite not written"
        )


def to_tflite(model, path: Path, size: int, representative: np.ndarray | None = None):
    """The Keras twin (probabilities and features as named outputs) and its LiteRT flatbuffer.

    Args:
        model: The loaded Keras model.
        path: Its file, for messages.
        size: Its input side.
        representative: ``None`` for a float32 twin; else ``(N, S, S, 3)``
            uint8 images to calibrate a full-integer twin on: int8 weights and
            activations, uint8 pixels in (scale 1, zero point 0 when the
            images span 0..255), int8 outputs.

    Raises:
        ConversionError: The converter failed.
    """
    import keras
    import tensorflow as tf

    # The signature's input takes the name of the Keras input; name it here whatever the model called it.
    inputs = keras.Input(shape=(size, size, 3), name=INPUT_NAME)
    twin = keras.Model(
        model.input, {PROBABILITIES_OUTPUT: model.output, FEATURES_OUTPUT: model.get_layer(FEATURES_LAYER).output}
    )
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, twin(inputs), name=model.name))
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image[None].astype(np.float32)] for image in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.int8
    chatter = io.StringIO()
    try:
        # Keras prints the summary of the SavedModel it exports for the converter; keep it for debugging only.
        with contextlib.redirect_stdout(chatter):
            return twin, converter.convert()
    except Exception as exc:  # the converter reports failures with many exception types
        raise ConversionError(f"cannot convert {str(path)!r} for LiteRT: {exc}") from exc
    finally:
        log.debug("converter output: %s", chatter.getvalue())


def _run_both(twin, tflite: bytes, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keras's probabilities, LiteRT's probabilities and LiteRT's features for ``images``."""
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=tflite).get_signature_runner()
    batches = [images[i : i + _BATCH].astype(np.float32) for i in range(0, len(images), _BATCH)]
    expected = np.concatenate([twin(batch, training=False)[PROBABILITIES_OUTPUT] for batch in batches])
    outputs = [runner(**{INPUT_NAME: batch}) for batch in batches]
    return (
        expected,
        np.concatenate([out[PROBABILITIES_OUTPUT] for out in outputs]),
        np.concatenate([out[FEATURES_OUTPUT] for out in outputs]),
    )


def write(conversion: Conversion, model_path: str | os.PathLike) -> Path:
    """Write the twin beside a plain ``model_path`` (the ``.tflite`` then its record), each atomically.

    ``catdog ship`` installs twins with their model as one release instead
    (:mod:`catdog.export.release`); this is for a model file outside the releases.

    Returns:
        The ``.tflite`` path.
    """
    model_path = Path(model_path)
    for name, content in conversion.files(model_path.name).items():
        with atomic_write(model_path.with_name(name)) as tmp:
            tmp.write_bytes(content)
    return litert_paths(model_path, conversion.precision)[0]


def check_images(
    artifacts_dir: Path | None, size: int, count: int = CHECK_IMAGES, seed: int = 0
) -> tuple[np.ndarray, str]:
    """Images for the conversion check: the validation part of the saved split, else generated ones.

    ``count`` images are taken evenly spaced across the validation list, so
    every class is in; if the split is missing, unreadable or too small,
    generated images make up the rest (and the returned description says so).

    Args:
        artifacts_dir: Folder of ``split.json`` (written by training) and
            ``manifest.json`` (naming the dataset folder); ``None`` for none.
        size: The model's input side.
        count: Images wanted.
        seed: Seed of the generated images.

    Returns:
        ``(count, size, size, 3)`` uint8 images and where they come from.
    """
    from catdog.serving.preprocess import load_image

    real: list[np.ndarray] = []
    found = validation_files(artifacts_dir)
    if found is not None:
        dataset_dir, files, _ = found
        picks = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(count, len(files))).round()})
        for index in picks if files else ():
            try:
                real.append(load_image(dataset_dir / files[index], size))
            except (InvalidImage, OSError) as exc:
                log.warning("skipping %s in the LiteRT check: %s", files[index], exc)
    generated = generated_images(count - len(real), size, seed) if len(real) < count else None
    if generated is None:
        return np.stack(real), f"validation split ({len(real)} images)"
    if not real:
        return generated, f"generated ({len(generated)} images; no validation split)"
    return np.concatenate([np.stack(real), generated]), f"validation split ({len(real)}) + generated ({len(generated)})"


def validation_files(artifacts_dir: str | os.PathLike | None) -> tuple[Path, list[str], list[int]] | None:
    """The dataset folder, and the validation part's files and labels, from the saved split; ``None`` without one.

    A split or manifest that cannot be read is logged and counts as none.
    """
    from catdog.data.dataset import load_split
    from catdog.data.validate import read_manifest

    if artifacts_dir is None:
        return None
    split_file, manifest_file = paths.split(artifacts_dir), paths.manifest(artifacts_dir)
    if not split_file.exists() or not manifest_file.exists():
        return None
    try:
        split = load_split(split_file)
        dataset_dir, _ = read_manifest(manifest_file)
        return dataset_dir, split.files["validation"], split.labels["validation"]
    except (DatasetError, KeyError) as exc:
        log.warning("cannot use the validation split: %s", exc)
        return None


def generated_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """Photo-like test images: smooth colour waves, a bright blob and grain, half of them low-contrast.

    Returns:
        ``(count, size, size, 3)`` uint8 images.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    images = np.empty((count, size, size, 3), np.uint8)
    for n in range(count):
        waves = [
            np.sin(rng.uniform(2, 20) * x + rng.uniform(0, 6.3)) * np.cos(rng.uniform(2, 20) * y) for _ in range(3)
        ]
        amplitude = rng.uniform(20, 110)
        pixels = rng.uniform(60, 200, 3) + amplitude * np.stack(waves, axis=-1)
        cx, cy, radius = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.3)
        pixels[(x - cx) ** 2 + (y - cy) ** 2 < radius**2] = rng.uniform(0, 255, 3)
        pixels += rng.normal(0, rng.uniform(0, 25), pixels.shape)
        images[n] = np.clip(pixels, 0, 255).astype(np.uint8)
    return images


def _pooled_head(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Softmax of ``mean(features) @ kernel + bias``: what a pooled Dense head computes."""
    logits = features.astype(np.float64).mean(axis=(1, 2)) @ kernel + bias
    logits -= logits.max(axis=-1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=-1, keepdims=True)
