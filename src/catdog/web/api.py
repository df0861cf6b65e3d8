"""The JSON API: ``POST /predict``, ``GET /health``, ``/ready``, ``/model``, ``/metrics`` and ``/openapi.json``.

``/openapi.json`` describes every route, body and error of this module; a
change here that it does not describe fails the tests.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

import catdog
from catdog.errors import InvalidImage
from catdog.serving.inference import Prediction, Predictor
from catdog.web import monitoring, openapi
from catdog.web.errors import ApiError, from_invalid_image
from catdog.web.model import get_predictor
from catdog.web.uploads import Uploads, read_uploads

bp = Blueprint("api", __name__)

# The query parameters each route understands; any other answers 400 rather than being silently ignored.
QUERY_PARAMETERS = {"api.predict": ("explain",)}


@bp.before_request
def refuse_unknown_query_parameters():
    """Answer 400 to a query parameter the route does not know (a typo like ``?explian=1``)."""
    allowed = QUERY_PARAMETERS.get(request.endpoint or "", ())
    unknown = [name for name in request.args if name not in allowed]
    if unknown:
        accepted = f"accepted: {', '.join(allowed)}" if allowed else "this address takes none"
        raise ApiError(400, "unknown_parameter", f"unknown query parameter {unknown[0]!r} ({accepted})")


@bp.post("/predict")
def predict():
    """Classify one image, or a batch in one forward pass.

    The answer for one image is ``{label, confidence, probabilities, model,
    time_ms}`` (plus ``heatmap_png_base64`` with ``?explain=1``); for a batch
    it is ``{predictions: [...], model, time_ms}``, where an image that was
    refused has ``{error: {code, message}}`` in its place. Only a batch none
    of whose images could be read is refused as a whole.
    """
    started = time.perf_counter()
    predictor = get_predictor()
    serving = current_app.config["CATDOG_SETTINGS"].serving
    uploads = read_uploads(request, max_bytes=serving.max_upload_bytes, max_batch=serving.max_batch)
    outcomes = classify_each(predictor, uploads)
    monitoring.record_request_size(len(outcomes))
    monitoring.record_outcomes(
        [o for o in outcomes if isinstance(o, Prediction)], [o.code for o in outcomes if isinstance(o, ApiError)]
    )
    errors = [outcome for outcome in outcomes if isinstance(outcome, ApiError)]
    if len(errors) == len(outcomes):
        raise errors[0] if not uploads.batch else none_readable(errors)
    items = [o.body() if isinstance(o, ApiError) else prediction_json(o) for o in outcomes]
    body: dict[str, Any] = {"predictions": items} if uploads.batch else dict(items[0])
    body["model"] = model_summary(predictor)
    body["time_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
    return jsonify(body)


def classify_each(predictor: Predictor, uploads: Uploads) -> list[Prediction | ApiError]:
    """The answer for each image of ``uploads``, in order: a prediction or why it was refused.

    All images go through one forward pass. Only when one of them is refused
    are they classified one at a time, so that the others still get their
    answer; that costs a pass per image, but only on a batch with a bad file.

    Raises:
        InvalidImage: The images together declare more pixels than one request may.
    """
    images = uploads.images
    # The pixel budget is the request's, not an image's: over it, the whole request is refused.
    predictor.check_request_pixels([image.data for image in images if image.error is None])
    if all(image.error is None for image in images):
        try:
            return list(predictor.predict_bytes([image.data for image in images], explain=uploads.explain))
        except InvalidImage as exc:
            if len(images) == 1:
                return [from_invalid_image(exc)]
    outcomes: list[Prediction | ApiError] = []
    for image in images:
        if image.error is not None:
            outcomes.append(image.error)
            continue
        try:
            outcomes.append(predictor.predict_bytes([image.data], explain=uploads.explain)[0])
        except InvalidImage as exc:
            outcomes.append(from_invalid_image(exc))
    return outcomes


def none_readable(errors: Sequence[ApiError]) -> ApiError:
    """The error for a batch none of whose images could be read: the first image's status and code."""
    first = errors[0]
    message = f"none of the {len(errors)} images could be read; image 1: {first.message}"
    return ApiError(first.status, first.code, message)


@bp.get("/health")
def health():
    """The process is alive (says nothing about the model)."""
    return jsonify({"status": "ok"})


@bp.get("/ready")
def ready():
    """200 once the model is loaded and warmed up, 503 otherwise."""
    try:
        predictor = get_predictor()
    except ApiError as exc:
        return jsonify({"ready": False, **exc.body()}), exc.status
    return jsonify({"ready": True, "model": model_summary(predictor)})


@bp.get("/model")
def model_info():
    """Architecture, input size, classes, parameter count, metrics, file hash, version and runtime name."""
    predictor = get_predictor()
    return jsonify({**public_model_info(predictor.info()), "version": model_version(predictor)})


@bp.get("/metrics")
def metrics():
    """Prometheus metrics of all workers, in Prometheus's text format."""
    return Response(monitoring.monitor().exposition(), content_type=monitoring.CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI 3.1 description of this API."""
    return jsonify(openapi.document(current_app.config["CATDOG_SETTINGS"]))


# Library versions and the training machine tell an attacker which bugs to try, and a client nothing it needs:
# they stay in the server's log (the model's load line) and in metrics.json beside the model.
PRIVATE_MODEL_FIELDS = frozenset({"runtime_version", "tensorflow_version", "keras_version"})
PRIVATE_METRICS_FIELDS = frozenset({"versions", "hardware"})


def public_model_info(info: dict[str, Any]) -> dict[str, Any]:
    """:meth:`Predictor.info` without the library versions and the training hardware, at any depth of its metrics."""
    public = {key: value for key, value in info.items() if key not in PRIVATE_MODEL_FIELDS}
    public["metrics"] = _without(info.get("metrics"), PRIVATE_METRICS_FIELDS)
    return public


def _without(value: Any, keys: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(item, keys) for item in value]
    return value


def prediction_json(result: Prediction) -> dict[str, Any]:
    """The JSON form of one prediction; ``note`` only when the answer is not the most probable class."""
    body: dict[str, Any] = {
        "label": result.label,
        "confidence": round(result.confidence, 6),
        "probabilities": {name: round(p, 6) for name, p in result.probabilities.items()},
    }
    if result.note is not None:
        body["note"] = result.note
    if result.heatmap_png is not None:
        body["heatmap_png_base64"] = base64.b64encode(result.heatmap_png).decode("ascii")
    return body


def model_summary(predictor: Predictor) -> dict[str, str]:
    """Which model answered: its architecture, version and a short hash of its file."""
    return {
        "architecture": predictor.architecture,
        "version": model_version(predictor),
        "sha256_short": predictor.short_hash,
    }


def model_version(predictor: Predictor) -> str:
    """The package version, the model file's short hash and the precision served, as a PEP 440 local version.

    ``0.1.0+3fa4c2d19b0e.int8``: the int8 twin's answers differ slightly from
    the float model's, so the version tells them apart.
    """
    return f"{catdog.__version__}+{predictor.short_hash}.{predictor.precision}"
