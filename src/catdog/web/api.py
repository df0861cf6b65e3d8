"""The JSON API: ``POST /predict``, ``GET /health``, ``GET /ready``, ``GET /model``."""

from __future__ import annotations

import base64
import time
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from catdog.inference import Prediction, Predictor
from catdog.web.errors import ApiError
from catdog.web.model import get_predictor
from catdog.web.uploads import read_uploads

bp = Blueprint("api", __name__)


@bp.post("/predict")
def predict():
    """Classify one image, or a batch in one forward pass.

    The answer for one image is ``{label, confidence, probabilities, model,
    time_ms}`` (plus ``heatmap_png_base64`` with ``?explain=1``); for a batch
    it is ``{predictions: [...], model, time_ms}``.
    """
    started = time.perf_counter()
    predictor = get_predictor()
    serving = current_app.config["CATDOG_SETTINGS"].serving
    uploads = read_uploads(request, max_bytes=serving.max_upload_bytes, max_batch=serving.max_batch)
    results = predictor.predict_bytes([upload.data for upload in uploads.images], explain=uploads.explain)
    items = [prediction_json(result) for result in results]
    body: dict[str, Any] = {"predictions": items} if uploads.batch else dict(items[0])
    body["model"] = model_summary(predictor)
    body["time_ms"] = round((time.perf_counter() - started) * 1000.0, 2)
    return jsonify(body)


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
        return jsonify({"ready": False, "error": {"code": exc.code, "message": exc.message}}), exc.status
    return jsonify({"ready": True, "model": model_summary(predictor)})


@bp.get("/model")
def model_info():
    """Architecture, input size, classes, parameter count, metrics, file hash, versions."""
    return jsonify(get_predictor().info())


def prediction_json(result: Prediction) -> dict[str, Any]:
    """The JSON form of one prediction."""
    body: dict[str, Any] = {
        "label": result.label,
        "confidence": round(result.confidence, 6),
        "probabilities": {name: round(p, 6) for name, p in result.probabilities.items()},
    }
    if result.heatmap_png is not None:
        body["heatmap_png_base64"] = base64.b64encode(result.heatmap_png).decode("ascii")
    return body


def model_summary(predictor: Predictor) -> dict[str, str]:
    """Which model answered: its architecture and a short hash of its file."""
    return {"architecture": predictor.architecture, "sha256_short": predictor.short_hash}
