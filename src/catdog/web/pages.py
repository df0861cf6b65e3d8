"""The upload page: ``GET /`` and the no-JavaScript form fallback ``POST /``.

With JavaScript the page posts to ``/predict`` with ``fetch`` and fills the
result in place; without it the form posts here and the result (heatmap
included, as ``data:`` URLs) is rendered on the server. Both show the same
messages, and everything the user sent is escaped by the templates.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from flask import Blueprint, current_app, render_template, request
from PIL import Image

from catdog.errors import InvalidImage
from catdog.labels import describe
from catdog.serving.inference import Prediction
from catdog.web import monitoring
from catdog.web.errors import ApiError, format_bytes, from_invalid_image
from catdog.web.model import get_predictor, unavailable_message
from catdog.web.uploads import read_uploads

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    """The upload page."""
    return render_template("index.html", **_page_context())


@bp.post("/")
def classify():
    """Classify the form's file and render the page with the result or the error."""
    serving = current_app.config["CATDOG_SETTINGS"].serving
    try:
        predictor = get_predictor()
        uploads = read_uploads(request, max_bytes=serving.max_upload_bytes, max_batch=serving.max_batch)
        upload = uploads.images[0]
        prediction = predictor.predict_bytes([upload.data], explain=uploads.explain)[0]
    except InvalidImage as exc:
        error = from_invalid_image(exc)
        monitoring.record_outcomes([], [error.code])
    except ApiError as exc:
        error = exc
    else:
        monitoring.record_outcomes([prediction])
        result = _result_context(prediction, upload.name, predictor.classes)
        return render_template("index.html", result=result, **_page_context())
    return render_template("index.html", error=error, **_page_context()), error.status


def _page_context() -> dict[str, Any]:
    settings = current_app.config["CATDOG_SETTINGS"]
    serving = settings.serving
    return {
        "classes": settings.data.classes,
        "verdicts": {name: describe(name, settings.data.classes) for name in settings.data.classes},
        "max_upload_bytes": serving.max_upload_bytes,
        "max_upload_text": format_bytes(serving.max_upload_bytes),
        "formats": serving.accepted_formats,
        "unavailable": unavailable_message(),
    }


def _result_context(prediction: Prediction, filename: str, classes: tuple[str, ...]) -> dict[str, Any]:
    return {
        "label": prediction.label,
        "verdict": describe(prediction.label, classes),
        "confidence": prediction.confidence,
        "probabilities": prediction.probabilities,
        "note": prediction.note,
        "filename": filename,
        "photo_url": _data_url(prediction.photo, "JPEG") if prediction.photo is not None else None,
        "heatmap_url": _png_data_url(prediction.heatmap_png) if prediction.heatmap_png is not None else None,
    }


def _data_url(image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, quality=85)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _png_data_url(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode('ascii')}"
