"""The two ways of running the shipped model: TensorFlow on ``model.h5``, LiteRT on its ``model.tflite`` twin.

``catdog ship`` converts ``model.h5`` to ``model.tflite`` and records, in
``model.tflite.json`` beside it, the sha256 of the ``.h5`` it came from, the
Dense head's weights and what the conversion check measured (see
:mod:`catdog.export.litert`). :func:`open_runtime` serves through LiteRT when that
record matches the ``.h5`` being served, and falls back to TensorFlow
otherwise. A LiteRT worker imports neither TensorFlow nor Keras: it holds
about a fifth of the memory and starts in a fraction of the time.

Both runtimes give the same two things: class probabilities for a batch of
uint8 images, and a heatmap explaining one class for one image. TensorFlow
computes Grad-CAM with gradients; LiteRT has no gradients, so it computes the
same map from the ``features`` output and the head's weights
(:func:`class_activation_map`), which is exact for a head made of global
average pooling then Dense.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from catdog.dirs import file_sha256
from catdog.errors import ModelError
from catdog.paths import litert_paths

log = logging.getLogger(__name__)

FEATURES_LAYER = "features"
PREDICTIONS_LAYER = "predictions"
RUNTIMES = ("auto", "litert", "tensorflow")
PRECISIONS = ("auto", "float", "int8")
LITERT_FORMAT = 1
# Signature names of the converted model's input and outputs.
INPUT_NAME = "image"
PROBABILITIES_OUTPUT = "probabilities"
FEATURES_OUTPUT = "features"


def class_activation_map(
    features: np.ndarray, kernel: np.ndarray, bias: np.ndarray, class_index: int | None = None
) -> np.ndarray:
    """The Grad-CAM map of a pooled Dense head, computed without gradients (CAM).

    The head is ``logits = mean(features over positions) @ kernel + bias``.
    The score explained is the class's log-odds, ``z_c - logsumexp(z_j, j != c)``,
    as in the TensorFlow Grad-CAM; its gradient with respect to the features
    is the same at every position: ``(kernel[:, c] - sum_j q_j kernel[:, j]) / (H W)``
    with ``q`` the softmax of the other classes' logits. Grad-CAM's weights are
    that gradient, so the map is ``relu(features . weights)``, scaled to a peak of 1.

    Args:
        features: ``(H, W, C)`` output of the ``features`` layer for one image.
        kernel: ``(C, K)`` Dense kernel.
        bias: ``(K,)`` Dense bias.
        class_index: Class to explain; the most probable one if ``None``.

    Returns:
        ``(H, W)`` float32 heatmap in [0, 1]; all zeros if nothing raised the score.
    """
    features = features.astype(np.float64)
    kernel = kernel.astype(np.float64)
    logits = features.mean(axis=(0, 1)) @ kernel + bias
    chosen = int(np.argmax(logits)) if class_index is None else class_index
    others = np.delete(np.arange(kernel.shape[1]), chosen)
    weights_of_others = np.exp(logits[others] - logits[others].max())
    weights_of_others /= weights_of_others.sum()
    gradient = (kernel[:, chosen] - kernel[:, others] @ weights_of_others) / (features.shape[0] * features.shape[1])
    cam = np.maximum(features @ gradient, 0.0)
    peak = cam.max()
    return (cam / peak if peak > 0 else np.zeros_like(cam)).astype(np.float32)


class TensorflowRuntime:
    """``model.h5`` loaded with Keras, run by ``tf.function`` graphs with fixed signatures.

    ``model.predict`` is not used: it builds a data pipeline on every call
    and is about ten times slower for one image.

    Args:
        path: The ``.h5`` model.
        num_classes: Outputs the model must have.

    Raises:
        ModelError: TensorFlow is not installed, the file cannot be loaded, or
            the model does not obey the contract.
    """

    name = "tensorflow"
    precision = "float"

    def __init__(self, path: Path, num_classes: int):
        self.path = path
        self._model = load_keras_model(path)
        self.input_size = check_contract(self._model, path, num_classes)
        self._forward, self._explain = _compile(self._model, self.input_size)

    @property
    def architecture(self) -> str:
        return self._model.name

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` float32 probabilities of a checked ``(N, S, S, 3)`` uint8 batch."""
        return self._forward(batch).numpy()

    def explain(self, array: np.ndarray, class_index: int | None) -> np.ndarray:
        """Grad-CAM of one checked ``(S, S, 3)`` uint8 image (the predicted class if ``None``)."""
        chosen = -1 if class_index is None else class_index
        return self._explain(array[None], np.int32(chosen)).numpy()

    def describe(self) -> dict[str, Any]:
        """Runtime name, versions and parameter count, for ``/model``."""
        import keras
        import tensorflow as tf

        return {
            "runtime": self.name,
            "runtime_version": tf.__version__,
            "parameters": int(self._model.count_params()),
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
        }


class LiteRTRuntime:
    """A LiteRT twin (``model.tflite`` or ``model.int8.tflite``) run by the interpreter; no TensorFlow in the process.

    The float twin takes float32 pixels; the int8 twin takes the uint8
    pixels as they are (its input scale is 1, zero point 0) and gives int8
    outputs, turned back into floats here with their scale and zero point.
    Only the outputs a call needs are read: the ``features`` map is large
    (the shipped ensemble's is 28x28x1088) and only a heatmap needs it.

    The interpreter is not thread-safe, so calls take a lock: the threads of
    a gunicorn worker take turns, as they do for the CPU anyway.

    Args:
        tflite_path: The converted model.
        record: Its record, already checked against the ``.h5``.
        num_classes: Outputs the model must have.
        num_threads: Interpreter threads; ``None`` for LiteRT's default.

    Raises:
        ModelError: LiteRT is not installed, or the file or its record does not obey the contract.
    """

    name = "litert"

    def __init__(self, tflite_path: Path, record: dict[str, Any], num_classes: int, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelError(f"cannot serve {str(tflite_path)!r}: ai-edge-litert is not installed ({exc})") from exc
        self.path = tflite_path
        self._record = record
        self.precision = str(record.get("precision", "float"))
        where = f"LiteRT model {str(tflite_path)!r}"
        try:
            self._interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
            self._interpreter.allocate_tensors()
            runner = self._interpreter.get_signature_runner()
            signature = self._interpreter.get_signature_list()
            (io,) = signature.values()
            if io["inputs"] != [INPUT_NAME] or sorted(io["outputs"]) != sorted([PROBABILITIES_OUTPUT, FEATURES_OUTPUT]):
                raise ModelError(
                    f"{where} must map {INPUT_NAME!r} to {PROBABILITIES_OUTPUT!r} and {FEATURES_OUTPUT!r}, got {io!r}"
                )
            self._input = runner.get_input_details()[INPUT_NAME]
            self._outputs = runner.get_output_details()
        except (RuntimeError, ValueError) as exc:
            raise ModelError(f"cannot load {where}: {exc}") from exc
        try:
            self.input_size = int(record["input_size"])
            self._kernel = np.asarray(record["head"]["kernel"], dtype=np.float32)
            self._bias = np.asarray(record["head"]["bias"], dtype=np.float32)
            self.architecture = str(record["architecture"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"the record of {where} lacks {exc}") from exc
        if self._kernel.ndim != 2 or self._kernel.shape[1] != num_classes or self._bias.shape != (num_classes,):
            raise ModelError(f"{where} must output {num_classes} probabilities, its head is {self._kernel.shape}")
        expected_input = np.uint8 if self.precision == "int8" else np.float32
        if self._input["dtype"] != expected_input or tuple(self._input["shape"]) != (1, *([self.input_size] * 2), 3):
            raise ModelError(f"{where} must take one {np.dtype(expected_input)} image, got {self._input!r}")
        if self.precision == "int8" and self._input["quantization"] != (1.0, 0):
            raise ModelError(f"{where} must take pixels as they are (scale 1, zero point 0), got {self._input!r}")
        self._lock = threading.Lock()

    def forward(self, image: np.ndarray, *, features: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(K,)`` of one checked ``(S, S, 3)`` uint8 image, and its ``features`` map if asked for."""
        wanted = (PROBABILITIES_OUTPUT, FEATURES_OUTPUT) if features else (PROBABILITIES_OUTPUT,)
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], image[None].astype(self._input["dtype"], copy=False))
            self._interpreter.invoke()
            raw = [self._interpreter.get_tensor(self._outputs[name]["index"]) for name in wanted]
        values = [self._dequantize(name, value)[0] for name, value in zip(wanted, raw, strict=True)]
        return values[0], values[1] if features else None

    def _dequantize(self, name: str, value: np.ndarray) -> np.ndarray:
        scale, zero_point = self._outputs[name]["quantization"]
        if value.dtype == np.float32:
            return value
        return (value.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)

    def probabilities(self, batch: np.ndarray) -> np.ndarray:
        """``(N, K)`` float32 probabilities of a checked ``(N, S, S, 3)`` uint8 batch.

        One image at a time: the interpreter sizes its memory for the largest
        batch it was ever given and keeps it, and for the shipped ensemble one
        batch of 16 took a process running the interpreter from 94 to 230 MiB
        for good. Batching saves little on a CPU, and other requests get the
        interpreter between images.
        """
        if not len(batch):
            return np.zeros((0, self._kernel.shape[1]), dtype=np.float32)
        return np.stack([self.forward(image)[0] for image in batch])

    def explain(self, array: np.ndarray, class_index: int | None) -> np.ndarray:
        """CAM of one checked ``(S, S, 3)`` uint8 image, equal to Grad-CAM (see :func:`class_activation_map`)."""
        _, features = self.forward(array, features=True)
        return class_activation_map(features, self._kernel, self._bias, class_index)

    def describe(self) -> dict[str, Any]:
        """Runtime name, versions and parameter count, for ``/model``."""
        from importlib.metadata import version

        return {
            "runtime": self.name,
            "runtime_version": version("ai-edge-litert"),
            "parameters": int(self._record.get("parameters", 0)),
            "tensorflow_version": None,
            "keras_version": None,
            "converted_with": self._record.get("converted_with"),
        }


def read_litert_record(
    model_path: Path, model_sha256: str, precision: str = "float"
) -> tuple[Path, dict[str, Any]] | str:
    """A LiteRT twin of ``model_path`` and its record, if they belong to it and passed their check.

    Returns:
        ``(tflite_path, record)``, or the reason why LiteRT cannot serve this
        model in ``precision`` (no twin, a record written for another ``.h5``,
        a damaged file, an int8 twin its check refused).
    """
    tflite, record_path = litert_paths(model_path, precision)
    if not record_path.exists():
        return f"no {tflite.name} with its {record_path.name} beside {model_path.name}"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record.get("format") != LITERT_FORMAT:
            return f"{record_path.name} has format {record.get('format')!r}, expected {LITERT_FORMAT}"
        if record.get("source_sha256") != model_sha256:
            return f"{tflite.name} was converted from another {model_path.name} (sha256 differs)"
        check = record.get("check", {})
        if check.get("passed") is False:
            return f"the {precision} twin was refused by its check: {'; '.join(check.get('failures', []))}"
        if not tflite.exists():
            return f"no {tflite.name} beside {model_path.name}, though {record_path.name} is there"
        if record.get("sha256") != file_sha256(tflite):
            return f"{tflite.name} does not match the sha256 in {record_path.name} (damaged or replaced)"
    except (OSError, ValueError, AttributeError) as exc:
        return f"cannot read {record_path.name}: {exc}"
    return tflite, record


def open_runtime(
    model_path: Path,
    model_sha256: str,
    num_classes: int,
    preference: str = "auto",
    *,
    num_threads: int | None = None,
    precision: str = "auto",
) -> tuple[TensorflowRuntime | LiteRTRuntime, str | None]:
    """Load the model with its checked LiteRT twin when there is one, else with TensorFlow.

    Args:
        model_path: The ``.h5`` model.
        model_sha256: Its sha256, which a twin's record must name.
        num_classes: Outputs the model must have.
        preference: ``auto`` (LiteRT when possible), ``litert`` (only LiteRT) or ``tensorflow``.
        num_threads: LiteRT interpreter threads; ``None`` for its default.
        precision: ``auto`` (the int8 twin when it passed its check, else
            float), ``float`` or ``int8`` (only the int8 twin).

    Returns:
        The runtime, and why it is not the fastest one wanted (``None`` when it is).

    Raises:
        ModelError: The chosen runtime cannot load the model.
        ValueError: ``preference`` or ``precision`` is not one of :data:`RUNTIMES` or :data:`PRECISIONS`.
    """
    if preference not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {preference!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and preference == "tensorflow":
        raise ValueError("precision int8 needs the LiteRT runtime; TensorFlow serves the float .h5")
    reasons: list[str] = []
    if preference != "tensorflow":
        for wanted in ("int8", "float") if precision == "auto" else (precision,):
            found = read_litert_record(model_path, model_sha256, wanted)
            if isinstance(found, tuple):
                try:
                    runtime = LiteRTRuntime(*found, num_classes, num_threads)
                except ModelError as exc:
                    reasons.append(str(exc))
                    continue
                if reasons:
                    log.info("serving %s with its %s LiteRT twin: %s", model_path.name, wanted, "; ".join(reasons))
                return runtime, "; ".join(reasons) or None
            reasons.append(found)
        if preference == "litert" or precision == "int8":
            raise ModelError(f"cannot serve {str(model_path)!r} with LiteRT ({precision}): {'; '.join(reasons)}")
        log.info("serving %s with TensorFlow: %s", model_path.name, "; ".join(reasons))
    return TensorflowRuntime(model_path, num_classes), "; ".join(reasons) or None


def load_keras_model(path: Path) -> Any:
    """Load a ``.h5`` model with Keras, uncompiled.

    Raises:
        ModelError: Keras is not installed, or the file is not a loadable Keras model.
    """
    try:
        import keras
    except ImportError as exc:
        raise ModelError(
            f"cannot load {str(path)!r}: TensorFlow/Keras is not installed and there is no LiteRT twin that matches "
            f"it (run catdog ship with the full install)",
            "its LiteRT twin (model.tflite) is missing or was made from another model file, and this install has no "
            "TensorFlow to load the model without it; run `catdog ship` with the full install",
        ) from exc
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # h5py and Keras report damage with many exception types
        raise ModelError(
            f"cannot load model file {str(path)!r} (truncated or not a Keras model): {exc}",
            "the model file is truncated or not a Keras model",
        ) from exc


def check_contract(model: Any, path: Path, num_classes: int) -> int:
    """Check the model contract (see :mod:`catdog.serving.inference`) and return the input side ``S``.

    Raises:
        ModelError: The model breaks the contract; the message says how.
    """
    where = f"model {str(path)!r}"
    shape = model.input_shape
    if not (isinstance(shape, tuple) and len(shape) == 4 and shape[3] == 3 and shape[1] and shape[1] == shape[2]):
        raise ModelError(f"{where} must take one (None, S, S, 3) input, got {shape!r}")
    if model.output_shape != (None, num_classes):
        raise ModelError(
            f"{where} must output (None, {num_classes}) probabilities, got {model.output_shape!r}",
            f"the model must output (None, {num_classes}) probabilities, one per configured class, "
            f"got {model.output_shape!r}",
        )
    names = {layer.name for layer in model.layers}
    for name in (FEATURES_LAYER, PREDICTIONS_LAYER):
        if name not in names:
            raise ModelError(f"{where} has no layer named {name!r}")
    features_shape = model.get_layer(FEATURES_LAYER).output.shape
    if len(features_shape) != 4:
        raise ModelError(f"{where}: layer {FEATURES_LAYER!r} must output a 4-D tensor, got {tuple(features_shape)!r}")
    head = model.get_layer(PREDICTIONS_LAYER)
    if not hasattr(head, "kernel") or head.output is not model.outputs[0]:
        raise ModelError(f"{where}: layer {PREDICTIONS_LAYER!r} must be the Dense output layer")
    return int(shape[1])


def _compile(model: Any, size: int) -> tuple[Any, Any]:
    """Build the forward and Grad-CAM ``tf.function`` graphs for ``model``."""
    import keras
    import tensorflow as tf

    head = model.get_layer(PREDICTIONS_LAYER)
    explainer = keras.Model(model.inputs, [model.get_layer(FEATURES_LAYER).output, head.input])

    @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    def forward(images):
        return model(tf.cast(images, tf.float32), training=False)

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, 3], tf.uint8), tf.TensorSpec([], tf.int32)])
    def explain(image, class_index):
        with tf.GradientTape() as tape:
            features, pooled = explainer(tf.cast(image, tf.float32), training=False)
            tape.watch(features)
            logits = tf.matmul(pooled, head.kernel)
            if head.bias is not None:
                logits = logits + head.bias
            chosen = tf.where(class_index < 0, tf.argmax(logits[0], output_type=tf.int32), class_index)
            others = tf.concat([logits[0, :chosen], logits[0, chosen + 1 :]], axis=0)
            score = logits[0, chosen] - tf.reduce_logsumexp(others)
        gradients = tape.gradient(score, features)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[0]
        peak = tf.reduce_max(cam)
        return tf.where(peak > 0, cam / tf.maximum(peak, 1e-12), tf.zeros_like(cam))

    return forward, explain
