"""The int8 twin of ``model.h5``: full-integer quantization, checked against the float model.

``catdog ship`` writes ``model.int8.tflite`` beside the float twin: weights
and activations in 8-bit integers, calibrated on a representative set (images
evenly spread over the validation part of the saved split, generated images
when there is none), uint8 pixels in as the app has them, int8 outputs that
:class:`catdog.serving.runtime.LiteRTRuntime` turns back into floats. Integer
arithmetic is several times cheaper on a CPU, at a small cost in precision,
so the twin is only served if, on the whole validation part (calibrated the
way the app serves):

* its labels equal the float ``.h5``'s on at least :attr:`Limits.agreement` of images;
* its accuracy is at most :attr:`Limits.accuracy_drop` below the float model's;
* its expected calibration error is at most :attr:`Limits.ece_increase` above;
* its heatmaps (CAM from its ``features``) correlate with the float ones at
  least :attr:`Limits.cam_correlation` on average.

The largest probability difference is recorded too. Without a labelled
validation part the check runs on generated images, and only the label and
heatmap figures can be measured. A twin that fails is not written: its
record ``model.int8.tflite.json`` says what was measured and why it was
refused, the app serves the float twin and ``/model`` says why.

Importing this module is cheap; quantizing needs TensorFlow and ai-edge-litert.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from catdog.errors import ModelError
from catdog.export import litert
from catdog.serving.calibration import answer, apply_temperature, expected_calibration_error
from catdog.serving.runtime import (
    FEATURES_LAYER,
    FEATURES_OUTPUT,
    PROBABILITIES_OUTPUT,
    LiteRTRuntime,
    class_activation_map,
)

log = logging.getLogger(__name__)

REPRESENTATIVE_IMAGES = 200
GENERATED_CHECK_IMAGES = 400
_BATCH = 32


@dataclasses.dataclass(frozen=True)
class Limits:
    """What the int8 twin must meet against the float model to be served.

    Attributes:
        agreement: Least share of images given the same label.
        accuracy_drop: Largest loss of accuracy (a fraction: 0.002 is 0.2 points).
        ece_increase: Largest rise of the expected calibration error (a fraction).
        cam_correlation: Least mean correlation of the heatmaps.
    """

    agreement: float = 0.995
    accuracy_drop: float = 0.002
    ece_increase: float = 0.005
    cam_correlation: float = 0.98


@dataclasses.dataclass(frozen=True)
class CheckSet:
    """Images to check the twin on, with their true labels when they are known."""

    images: np.ndarray
    labels: np.ndarray | None
    source: str


def quantize(
    model_path: str | os.PathLike,
    *,
    artifacts_dir: str | os.PathLike | None = None,
    representative: np.ndarray | None = None,
    check_set: CheckSet | None = None,
    temperature: float = 1.0,
    class_bias: tuple[float, ...] | None = None,
    decision_bias: tuple[float, ...] | None = None,
    limits: Limits = Limits(),
) -> litert.Conversion:
    """Quantize a ``.h5`` model to a full-integer LiteRT twin and check it against the float model.

    Args:
        model_path: The Keras ``.h5`` model.
        artifacts_dir: Folder of ``split.json`` and ``manifest.json``, where
            the representative and check images come from when not given.
        representative: ``(N, S, S, 3)`` uint8 calibration images; ``None``
            for :data:`REPRESENTATIVE_IMAGES` from :func:`catdog.export.litert.check_images`.
        check_set: Images to check on; ``None`` for :func:`check_set_from`.
        temperature: The calibration temperature the app applies (``metrics.json``).
        class_bias: The calibration class bias the app applies, if any.
        decision_bias: The decision bias the app chooses its answers with, if any.
        limits: What the twin must meet.

    Returns:
        The twin (``tflite`` is ``None`` if it was refused) and its record,
        whose ``check`` holds the figures, ``passed`` and the ``failures``.

    Raises:
        ModelError: The model cannot be loaded or breaks the contract.
        ConversionError: The converter failed.
    """
    from catdog.serving.runtime import check_contract, load_keras_model

    path = Path(model_path)
    model = load_keras_model(path)
    num_classes = int(model.output_shape[-1])
    size = check_contract(model, path, num_classes)
    artifacts = Path(artifacts_dir) if artifacts_dir is not None else None
    if representative is None:
        representative, representative_source = litert.check_images(artifacts, size, REPRESENTATIVE_IMAGES, seed=1)
    else:
        representative_source = f"given ({len(representative)} images)"
    check_set = check_set or check_set_from(artifacts, size)

    twin, tflite = litert.to_tflite(model, path, size, representative)
    kernel, bias = litert.head_weights(model)
    float_probabilities, float_maps, float_labels = _float_outputs(
        twin, check_set.images, kernel, bias, temperature, class_bias, decision_bias
    )
    features_shape = tuple(model.get_layer(FEATURES_LAYER).output.shape[1:])
    record = litert.twin_record(model, path, size, features_shape, {}, "int8")
    int8_probabilities, int8_maps = _int8_outputs(tflite, record, check_set.images, float_labels)
    check = compare(
        float_probabilities,
        int8_probabilities,
        float_maps,
        int8_maps,
        check_set.labels,
        temperature=temperature,
        class_bias=class_bias,
        decision_bias=decision_bias,
        limits=limits,
    )
    record["check"] = {"source": check_set.source, **check}
    record["quantization"] = {
        "representative": representative_source,
        "weights": "int8, per channel",
        "activations": "int8",
        "input": "uint8 pixels (scale 1, zero point 0)",
        "outputs": "int8",
    }
    if check["passed"]:
        log.info(
            "int8 twin of %s: labels agree on %.2f%% of %d images (%s), largest probability difference %.3f, "
            "heatmap correlation %.3f",
            path.name,
            100 * check["agreement"],
            check["images"],
            check_set.source,
            check["max_abs_difference"],
            check["cam_correlation_mean"],
        )
        return litert.Conversion(tflite, record)
    log.warning("int8 twin of %s refused, the float twin serves: %s", path.name, "; ".join(check["failures"]))
    return litert.Conversion(None, record)


def check_set_from(artifacts_dir: Path | None, size: int) -> CheckSet:
    """The whole validation part of the saved split with its labels, else generated images (no labels).

    Raises:
        DatasetError: A validation file no longer decodes (the data changed since validation).
    """
    from catdog.data.dataset import decode_images

    found = litert.validation_files(artifacts_dir)
    if found is not None and found[1]:
        dataset_dir, files, labels = found
        images = decode_images([dataset_dir / name for name in files], size, desc="int8 check: decoding")
        return CheckSet(images, np.asarray(labels, dtype=np.int64), f"validation split ({len(files)} images)")
    images = litert.generated_images(GENERATED_CHECK_IMAGES, size, seed=2)
    return CheckSet(images, None, f"generated ({len(images)} images; no validation split)")


def compare(
    float_probabilities: np.ndarray,
    int8_probabilities: np.ndarray,
    float_maps: np.ndarray,
    int8_maps: np.ndarray,
    labels: np.ndarray | None,
    *,
    temperature: float = 1.0,
    class_bias: tuple[float, ...] | None = None,
    decision_bias: tuple[float, ...] | None = None,
    limits: Limits = Limits(),
) -> dict[str, Any]:
    """Measure the int8 twin against the float model, both calibrated and answering as served, and judge it.

    Args:
        float_probabilities: ``(N, K)`` raw probabilities of the float model.
        int8_probabilities: ``(N, K)`` raw probabilities of the int8 twin.
        float_maps: ``(N, H, W)`` float heatmaps, each of the float model's label.
        int8_maps: ``(N, H, W)`` int8 heatmaps of the same classes.
        labels: ``(N,)`` true classes, or ``None`` when unknown (accuracy and ECE are then not measured).
        temperature: Calibration temperature.
        class_bias: Calibration class bias.
        decision_bias: The decision bias the answers are chosen with (:func:`catdog.serving.calibration.answer`).
        limits: What the twin must meet.

    Returns:
        The figures (fractions, not percents), ``passed``, and ``failures``
        (one sentence per limit missed) and the ``limits``.
    """
    calibrated_float = apply_temperature(float_probabilities, temperature, class_bias)
    calibrated_int8 = apply_temperature(int8_probabilities, temperature, class_bias)
    float_labels, _ = answer(calibrated_float, decision_bias)
    int8_labels, _ = answer(calibrated_int8, decision_bias)
    correlations = np.array([_correlation(a, b) for a, b in zip(float_maps, int8_maps, strict=True)])
    figures: dict[str, Any] = {
        "images": len(float_labels),
        "agreement": float((float_labels == int8_labels).mean()),
        "disagreements": int((float_labels != int8_labels).sum()),
        "max_abs_difference": float(np.abs(calibrated_float - calibrated_int8).max()),
        "cam_correlation_mean": float(correlations.mean()),
        "cam_correlation_min": float(correlations.min()),
        "accuracy_float": None,
        "accuracy_int8": None,
        "ece_float": None,
        "ece_int8": None,
    }
    failures = []
    if figures["agreement"] < limits.agreement:
        failures.append(
            f"labels agree with the float model on {100 * figures['agreement']:.2f}% of {figures['images']} images, "
            f"below {100 * limits.agreement:g}%"
        )
    if figures["cam_correlation_mean"] < limits.cam_correlation:
        failures.append(
            f"heatmaps correlate {figures['cam_correlation_mean']:.3f} with the float ones on average, "
            f"below {limits.cam_correlation:g}"
        )
    if labels is not None:
        figures["accuracy_float"] = float((float_labels == labels).mean())
        figures["accuracy_int8"] = float((int8_labels == labels).mean())
        figures["ece_float"] = expected_calibration_error(calibrated_float, labels, decision_bias=decision_bias)
        figures["ece_int8"] = expected_calibration_error(calibrated_int8, labels, decision_bias=decision_bias)
        drop = figures["accuracy_float"] - figures["accuracy_int8"]
        if drop > limits.accuracy_drop:
            failures.append(
                f"accuracy {100 * figures['accuracy_int8']:.2f}% is {100 * drop:.2f} points below the float "
                f"model's {100 * figures['accuracy_float']:.2f}% (at most {100 * limits.accuracy_drop:g})"
            )
        rise = figures["ece_int8"] - figures["ece_float"]
        if rise > limits.ece_increase:
            failures.append(
                f"calibration error {100 * figures['ece_int8']:.2f}% is {100 * rise:.2f} points above the float "
                f"model's {100 * figures['ece_float']:.2f}% (at most {100 * limits.ece_increase:g})"
            )
    return {**figures, "limits": dataclasses.asdict(limits), "passed": not failures, "failures": failures}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two maps; two flat maps correlate 1 if equal, a flat and a varied one 0."""
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _float_outputs(
    twin, images: np.ndarray, kernel: np.ndarray, bias: np.ndarray, temperature: float, class_bias, decision_bias
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float model's raw probabilities, its heatmaps of its answers as served, and those answers."""
    probabilities, maps, labels = [], [], []
    for start in range(0, len(images), _BATCH):
        outputs = twin(images[start : start + _BATCH].astype(np.float32), training=False)
        batch = np.asarray(outputs[PROBABILITIES_OUTPUT])
        chosen, _ = answer(apply_temperature(batch, temperature, class_bias), decision_bias)
        features = np.asarray(outputs[FEATURES_OUTPUT])
        maps.extend(class_activation_map(f, kernel, bias, int(c)) for f, c in zip(features, chosen, strict=True))
        probabilities.append(batch)
        labels.append(chosen)
    return np.concatenate(probabilities), np.stack(maps), np.concatenate(labels)


def _int8_outputs(
    tflite: bytes, record: dict[str, Any], images: np.ndarray, classes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The int8 twin's raw probabilities and its heatmaps of ``classes``, through the serving runtime."""
    with tempfile.TemporaryDirectory(prefix="catdog-int8-") as folder:
        path = Path(folder) / "model.int8.tflite"
        path.write_bytes(tflite)
        try:
            runtime = LiteRTRuntime(path, record, record["num_classes"])
        except ModelError as exc:
            raise litert.ConversionError(f"the int8 twin cannot be served: {exc}") from exc
        kernel, bias = (np.asarray(record["head"][name], np.float32) for name in ("kernel", "bias"))
        probabilities, maps = [], []
        for image, chosen in zip(images, classes, strict=True):
            p, features = runtime.forward(image, features=True)
            probabilities.append(p)
            maps.append(class_activation_map(features, kernel, bias, int(chosen)))
    return np.stack(probabilities), np.stack(maps)
