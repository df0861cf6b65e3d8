"""Serving-side inference: one loaded model, fast forward passes and Grad-CAM.

A :class:`Predictor` loads a saved model once through one of the runtimes of
:mod:`catdog.serving.runtime` (LiteRT when a twin beside the ``.h5`` was converted
from it, its int8 twin when that passed its check; TensorFlow otherwise), checks that it obeys the catdog
model contract and warms it up, so a request never pays for tracing. It
applies the calibration temperature that training recorded in
``metrics.json`` beside the model (``{"calibration": {"temperature": T}}``;
none means ``T = 1``) to every probability it returns, whatever the runtime,
and chooses every answer by :func:`catdog.serving.calibration.answer` with the
recorded ``decision_bias`` (none means the most probable class): both steps
are numpy after the runtime, so TensorFlow and LiteRT answer alike.

The model contract:

* input ``(None, S, S, 3)``: float pixels in 0..255 (rescaling is inside the
  model);
* output layer ``predictions``: ``Dense(len(classes), softmax)``, index ``i``
  is ``classes[i]``;
* a layer named ``features``: the 4-D output of the last convolutional
  stage, before global pooling; Grad-CAM reads it.

TensorFlow is imported only when the TensorFlow runtime loads a model,
never at module import and never by a process serving LiteRT.
After construction a predictor only reads its state, so one instance can be
shared by the threads of a gunicorn ``gthread`` worker.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from catdog import paths
from catdog.dirs import file_sha256
from catdog.errors import InvalidImage, ModelError
from catdog.labels import answer_note
from catdog.serving.calibration import answer, apply_temperature
from catdog.serving.preprocess import ImageLimits, declared_pixels, open_image, resize_image
from catdog.serving.runtime import open_runtime

log = logging.getLogger(__name__)

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
SHORT_HASH_LENGTH = 12
OVERLAY_MAX_SIDE = 384

# Anchor colours of the heatmap palette, from cold (0) to hot (1):
# transparent-looking navy, blue, cyan, green-yellow, orange, red.
_PALETTE_ANCHORS = np.array(
    [
        [0.00, 20, 20, 90],
        [0.20, 30, 80, 220],
        [0.40, 40, 200, 230],
        [0.60, 170, 230, 60],
        [0.80, 250, 160, 30],
        [1.00, 220, 30, 30],
    ],
    dtype=np.float64,
)


def _palette() -> np.ndarray:
    """Return a ``(256, 3)`` uint8 lookup table interpolated between the anchors."""
    levels = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(levels, _PALETTE_ANCHORS[:, 0], _PALETTE_ANCHORS[:, c]) for c in (1, 2, 3)]
    return np.stack(channels, axis=1).round().astype(np.uint8)


PALETTE = _palette()


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The answer for one image.

    Attributes:
        label: The answer (:func:`catdog.serving.calibration.answer`): the most probable class
            unless the model's decision bias says otherwise.
        confidence: Its calibrated probability.
        probabilities: Probability per class name, in the model's order.
        heatmap_png: The Grad-CAM overlay as PNG bytes, if it was asked for.
        photo: The decoded photo (at most ``OVERLAY_MAX_SIDE`` pixels a side),
            kept only when the heatmap was asked for, to show beside it.
    """

    label: str
    confidence: float
    probabilities: dict[str, float]
    heatmap_png: bytes | None = None
    photo: Image.Image | None = None

    @property
    def note(self) -> str | None:
        """Why the answer is not the most probable class (:func:`catdog.labels.answer_note`); None when it is."""
        return answer_note(self.label, self.probabilities)


class Predictor:
    """A loaded, warmed-up model that classifies images and explains its answers.

    Args:
        model_path: The saved ``.h5`` model.
        classes: Class names, index ``i`` of the output is ``classes[i]``.
        limits: The images accepted (see :class:`catdog.serving.preprocess.ImageLimits`).
        runtime: ``auto`` (LiteRT when the ``.tflite`` twin matches the
            ``.h5``, else TensorFlow), ``litert`` or ``tensorflow``.
        num_threads: LiteRT interpreter threads; ``None`` for its default.
        precision: ``auto`` (the int8 twin when it passed its check, else
            float), ``float`` or ``int8``.

    Raises:
        ModelError: The file is missing, not HDF5, truncated, the model
            does not obey the contract, its calibration temperature is
            not a positive number, or a bias is not one finite number per class.
    """

    def __init__(
        self,
        model_path: str | Path,
        classes: Sequence[str],
        *,
        limits: ImageLimits = ImageLimits(),
        runtime: str = "auto",
        num_threads: int | None = None,
        precision: str = "auto",
    ):
        # A shipped model.h5 is a link to its release: follow it once, then read everything beside the file it leads to.
        self.path = paths.served_model(model_path)
        self.classes = tuple(classes)
        self.limits = limits
        self._sha256 = _check_file(self.path)
        metrics_file = paths.shipped_metrics(self.path)
        self._metrics = _served_metrics(metrics_file)
        self.temperature, self.class_bias, self.decision_bias = calibration_of(
            self._metrics, self._sha256, metrics_file, len(self.classes)
        )
        self._runtime, self.precision_note = open_runtime(
            self.path, self._sha256, len(self.classes), runtime, num_threads=num_threads, precision=precision
        )
        self.input_size = self._runtime.input_size
        self._warm_up()

    @classmethod
    def from_settings(cls, settings, model_path: str | Path | None = None) -> Predictor:
        """A predictor with the configured classes and serving limits.

        Args:
            settings: The loaded :class:`catdog.config.Settings`.
            model_path: The model file; ``settings.model.path`` if ``None``.
        """
        return cls(
            model_path or settings.model.path,
            settings.data.classes,
            limits=ImageLimits.from_serving(settings.serving),
            num_threads=settings.serving.litert_threads,
            precision=settings.serving.precision,
        )

    def _warm_up(self) -> None:
        """Run both graphs once so the first request does not pay for tracing."""
        blank = np.zeros((1, self.input_size, self.input_size, 3), dtype=np.uint8)
        self.predict_arrays(blank)
        self.gradcam(blank[0])
        side = self.input_size
        described = self._runtime.describe()
        log.info(
            "model %s (%s, %dx%d input, temperature %g) loaded with %s %s (%s; TensorFlow %s, Keras %s) and warmed up",
            self.path,
            self.architecture,
            side,
            side,
            self.temperature,
            self.runtime,
            described["runtime_version"],
            self.precision,
            described["tensorflow_version"],
            described["keras_version"],
        )

    def predict_arrays(self, batch: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """Classify preprocessed images in one forward pass.

        Args:
            batch: ``(N, S, S, 3)`` uint8 pixels, as :func:`catdog.serving.preprocess.load_image` makes them.
            calibrated: Apply :attr:`temperature`; ``False`` gives the model's
                own probabilities (to fit a temperature on them, say).

        Returns:
            ``(N, len(classes))`` float32 probabilities.

        Raises:
            ValueError: ``batch`` has the wrong shape or type.
        """
        expected = (self.input_size, self.input_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected or batch.dtype != np.uint8:
            raise ValueError(
                f"batch must be uint8 of shape (N, {', '.join(map(str, expected))}), got {batch.dtype} {batch.shape}"
            )
        probabilities = self._runtime.probabilities(batch)
        return apply_temperature(probabilities, self.temperature, self.class_bias) if calibrated else probabilities

    def gradcam(self, array: np.ndarray, class_index: int | None = None) -> np.ndarray:
        """Grad-CAM heatmap of one preprocessed image.

        The score explained is the log-odds of the class (its logit minus the
        log-sum-exp of the others), which, unlike the softmax probability,
        keeps a useful gradient when the model is sure of itself. TensorFlow
        computes it with gradients, LiteRT with the equivalent CAM (see
        :func:`catdog.serving.runtime.class_activation_map`).

        Args:
            array: ``(S, S, 3)`` uint8 pixels.
            class_index: Class to explain; the answer (:meth:`answer`) if ``None``.

        Returns:
            ``(H, W)`` float32 heatmap in [0, 1], at the ``features`` layer's
            resolution; all zeros if nothing in the image raised the score.

        Raises:
            ValueError: ``array`` has the wrong shape or type, or ``class_index`` is out of range.
        """
        expected = (self.input_size, self.input_size, 3)
        if array.shape != expected or array.dtype != np.uint8:
            raise ValueError(f"array must be uint8 of shape {expected}, got {array.dtype} {array.shape}")
        if class_index is not None and not 0 <= class_index < len(self.classes):
            raise ValueError(f"class_index must be in [0, {len(self.classes)}), got {class_index!r}")
        if class_index is None:
            # The runtime's own default is the top raw logit, which a class or decision bias can overrule.
            class_index = int(self.answer(self.predict_arrays(array[None]))[0][0])
        return self._runtime.explain(array, class_index)

    def answer(self, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The answers and their confidence for calibrated probabilities, with this model's decision bias.

        Returns:
            ``(N,)`` class indices and ``(N,)`` confidences (see :func:`catdog.serving.calibration.answer`).
        """
        return answer(probabilities, self.decision_bias)

    def decode(self, data: bytes) -> tuple[Image.Image, np.ndarray]:
        """Decode one upload into the photo and the model's input.

        Uses the shared preprocessing exactly as
        :func:`catdog.serving.preprocess.load_image` does, keeping the decoded photo
        (reduced while decoding to at least twice the model's input side)
        for the heatmap overlay.

        Args:
            data: Encoded image bytes.

        Returns:
            The decoded RGB photo and its ``(S, S, 3)`` uint8 model input.

        Raises:
            InvalidImage: The bytes are not an image this service accepts.
        """
        photo = open_image(data, limits=self.limits, draft_size=2 * self.input_size)
        return photo, resize_image(photo, self.input_size)

    def check_request_pixels(self, images: Sequence[bytes]) -> None:
        """Refuse images that together declare more than ``max_request_pixels``.

        Raises:
            InvalidImage: ``too_large``, for the request as a whole (no single
                image is at fault, so a batch does not answer per image).
        """
        budget = self.limits.max_request_pixels
        if budget is None or len(images) < 2:
            return
        total = sum(declared_pixels(data, self.limits.accepted_formats) for data in images)
        if total > budget:
            raise InvalidImage(
                "too_large",
                f"the {len(images)} images declare {total:,} pixels together, "
                f"more than the limit of {budget:,} for one request",
            )

    def predict_bytes(self, images: Sequence[bytes], *, explain: bool = False) -> list[Prediction]:
        """Decode and classify encoded images in one forward pass.

        Args:
            images: Encoded images (JPEG, PNG...).
            explain: Also compute a Grad-CAM overlay for each image.

        Returns:
            One :class:`Prediction` per image, in order.

        Raises:
            InvalidImage: An image was refused, or all of them together
                declare more than ``max_request_pixels`` (``too_large``); when
                there are several, the message says which one (counting from 1).
            ValueError: ``images`` is empty.
        """
        if not images:
            raise ValueError("images must not be empty")
        self.check_request_pixels(images)
        shown_photos, arrays = [], []
        for number, data in enumerate(images, start=1):
            try:
                photo, array = self.decode(data)
            except InvalidImage as exc:
                if len(images) == 1:
                    raise
                raise InvalidImage(exc.reason, f"image {number}: {exc.message}") from exc
            # Only the small copy the heatmap is drawn on outlives this loop.
            shown_photos.append(_shrink(photo, OVERLAY_MAX_SIDE) if explain else None)
            arrays.append(array)
            del photo
        probabilities = self.predict_arrays(np.stack(arrays))
        labels, confidences = self.answer(probabilities)
        results = []
        for shown, array, probs, best, confidence in zip(
            shown_photos, arrays, probabilities, labels, confidences, strict=True
        ):
            heatmap_png = None
            if explain:
                # Explain the class answered, which a decision bias can make other than the most probable.
                heatmap_png = overlay_heatmap(shown, self.gradcam(array, int(best)))
            results.append(
                Prediction(
                    label=self.classes[best],
                    confidence=float(confidence),
                    probabilities={name: float(p) for name, p in zip(self.classes, probs, strict=True)},
                    heatmap_png=heatmap_png,
                    photo=shown,
                )
            )
        return results

    def info(self) -> dict[str, Any]:
        """Describe the loaded model.

        Returns:
            A JSON-ready mapping: architecture, input size, classes,
            parameter count, file name, size and sha256, the runtime
            (``litert`` or ``tensorflow``), its precision (``float`` or
            ``int8``) and why it is not int8 (``precision_note``, ``None``
            when it is), the runtime's version, TensorFlow and
            Keras versions (``None`` under LiteRT, which loads neither), the
            calibration temperature and class bias, the decision bias (zeros when the answer is
            always the most probable class), and the metrics from ``metrics.json``
            beside the model file (``None`` if there is none or it cannot be read).
        """
        described = self._runtime.describe()
        return {
            "architecture": self.architecture,
            "input_size": [self.input_size, self.input_size, 3],
            "classes": list(self.classes),
            "parameters": described["parameters"],
            "file": self.path.name,
            "file_bytes": self.path.stat().st_size,
            "sha256": self._sha256,
            "sha256_short": self.short_hash,
            "runtime": described["runtime"],
            "runtime_version": described["runtime_version"],
            "precision": self.precision,
            "precision_note": self.precision_note,
            "tensorflow_version": described["tensorflow_version"],
            "keras_version": described["keras_version"],
            "calibration_temperature": self.temperature,
            "calibration_class_bias": list(self.class_bias) if self.class_bias else None,
            "calibration_decision_bias": list(self.decision_bias),
            "metrics": self._metrics,
        }

    @property
    def architecture(self) -> str:
        """The model's name, which the training code sets to its architecture."""
        return self._runtime.architecture

    @property
    def runtime(self) -> str:
        """Which runtime serves the model: ``litert`` or ``tensorflow``."""
        return self._runtime.name

    @property
    def precision(self) -> str:
        """The arithmetic of the forward pass: ``float`` or ``int8``."""
        return self._runtime.precision

    @property
    def short_hash(self) -> str:
        """The first hex digits of the model file's sha256."""
        return self._sha256[:SHORT_HASH_LENGTH]


def overlay_heatmap(photo: Image.Image, heatmap: np.ndarray, *, max_alpha: float = 0.6) -> bytes:
    """Colour a heatmap over a photo and encode the result as PNG.

    The heatmap is stretched to the photo's size (the model saw the photo
    stretched to a square, so positions match). Its opacity grows with the
    heat, so cold regions leave the photo visible.

    Args:
        photo: An RGB image.
        heatmap: ``(H, W)`` values in [0, 1].
        max_alpha: Opacity of the hottest points.

    Returns:
        PNG bytes, the size of ``photo``.
    """
    heat = Image.fromarray(np.clip(heatmap, 0.0, 1.0).astype(np.float32), mode="F")
    heat = np.asarray(heat.resize(photo.size, Image.Resampling.BILINEAR), dtype=np.float32)
    heat = np.clip(heat, 0.0, 1.0)
    colours = PALETTE[(heat * 255).round().astype(np.uint8)].astype(np.float32)
    alpha = (max_alpha * np.sqrt(heat))[..., None]
    pixels = np.asarray(photo.convert("RGB"), dtype=np.float32)
    blended = (1.0 - alpha) * pixels + alpha * colours
    buffer = io.BytesIO()
    Image.fromarray(blended.round().astype(np.uint8), mode="RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _shrink(photo: Image.Image, max_side: int) -> Image.Image:
    """Return a copy no larger than ``max_side`` on either side, aspect kept."""
    shown = photo.copy()
    shown.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return shown


def _check_file(path: Path) -> str:
    """Check that ``path`` is a readable HDF5 file and return its sha256."""
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} was not found", "the model file was not found")
    try:
        with path.open("rb") as stream:
            if stream.read(len(HDF5_SIGNATURE)) != HDF5_SIGNATURE:
                raise ModelError(
                    f"model file {str(path)!r} is not an HDF5 (.h5) file", "the model file is not an HDF5 (.h5) file"
                )
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"cannot read model file {str(path)!r}: {exc.strerror or exc}") from exc
    return digest


def read_metrics_file(path: Path) -> dict[str, Any]:
    """The metrics that training wrote (``<arch>.metrics.json``, or a release's ``metrics.json``).

    The one reader of a metrics file: training, ``ship`` and the app all read through it.

    Raises:
        ModelError: The file is missing, unreadable, not JSON, or not a JSON object.
    """
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the metrics {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    if not isinstance(metrics, dict):
        raise ModelError(f"cannot read the metrics {path}: not a JSON object")
    return metrics


def _served_metrics(path: Path) -> dict[str, Any] | None:
    """The metrics beside a served model, or ``None``: the app serves a model without them (uncalibrated)."""
    if not path.exists():
        return None
    try:
        return read_metrics_file(path)
    except ModelError as exc:
        log.warning("%s", exc)
        return None


def calibration_of(
    metrics: dict[str, Any] | None, model_sha256: str, path: Path, num_classes: int
) -> tuple[float, tuple[float, ...] | None, tuple[float, ...]]:
    """The calibration temperature, class bias and decision bias recorded for this model.

    Without a calibration: ``(1, None, zeros)``. Metrics that name another model file
    (``model_sha256``) do not apply: their calibration was fitted to other logits. A missing
    ``decision_bias`` (metrics from before it existed) is zeros: the answer is the most probable class.

    Raises:
        ModelError: The recorded temperature is not a positive finite number,
            or a bias is not one finite number per class.
    """
    no_decision_bias = (0.0,) * num_classes
    calibration = (metrics or {}).get("calibration")
    if not isinstance(calibration, dict) or "temperature" not in calibration:
        return 1.0, None, no_decision_bias
    recorded_for = metrics.get("model_sha256")
    if recorded_for is not None and recorded_for != model_sha256:
        log.warning("%s was written for another model file (sha256 differs); its calibration is not applied", path)
        return 1.0, None, no_decision_bias
    value = calibration["temperature"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ModelError(f"{path}: calibration.temperature must be a positive number, got {value!r}")
    class_bias = _bias(calibration, "class_bias", path, num_classes)
    decision_bias = _bias(calibration, "decision_bias", path, num_classes)
    return float(value), class_bias, decision_bias or no_decision_bias


def _bias(calibration: dict[str, Any], key: str, path: Path, num_classes: int) -> tuple[float, ...] | None:
    """``calibration[key]`` as one float per class, or None when it is absent.

    Raises:
        ModelError: It is not a list of ``num_classes`` finite numbers.
    """
    bias = calibration.get(key)
    if bias is None:
        return None
    if (
        not isinstance(bias, list)
        or len(bias) != num_classes
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b) for b in bias)
    ):
        raise ModelError(f"{path}: calibration.{key} must be {num_classes} finite numbers, got {bias!r}")
    return tuple(float(b) for b in bias)
