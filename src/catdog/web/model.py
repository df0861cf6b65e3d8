"""The one model of this process: loaded and warmed up when the app is created.

Under gunicorn (``preload_app = False``) every worker imports the app and so
loads its own copy once, before it serves its first request. A model that is
missing or broken does not stop the app: the error is logged with its
details, ``/ready`` says not ready and predictions answer 503 with a short
public reason (no file path, no library's error text).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from flask import Flask, current_app

from catdog.config import Settings
from catdog.errors import ModelError
from catdog.serving.inference import Predictor
from catdog.web.errors import ApiError

log = logging.getLogger(__name__)

EXTENSION = "catdog.model"


@dataclasses.dataclass(frozen=True)
class ModelSlot:
    """The loaded predictor, or why there is none (a reason fit for the public), and how long loading took."""

    predictor: Predictor | None
    error: str | None
    load_seconds: float | None = None


def init_app(app: Flask, settings: Settings) -> None:
    """Load the model named by ``settings`` and attach it to ``app``."""
    started = time.perf_counter()
    try:
        predictor = Predictor.from_settings(settings)
    except ModelError as exc:
        log.error("serving without a model: %s", exc)
        app.extensions[EXTENSION] = ModelSlot(None, exc.public)
    else:
        app.extensions[EXTENSION] = ModelSlot(predictor, None, time.perf_counter() - started)


def load_seconds(app: Flask) -> float | None:
    """How long ``app``'s model took to load and warm up; ``None`` without a model."""
    return app.extensions[EXTENSION].load_seconds


def unavailable_message() -> str | None:
    """Why predictions are unavailable, or ``None`` when the model is ready."""
    slot: ModelSlot = current_app.extensions[EXTENSION]
    if slot.predictor is not None:
        return None
    return f"the model is not available: {slot.error}. Install a trained model and restart the server."


def get_predictor() -> Predictor:
    """The ready predictor.

    Raises:
        ApiError: 503 ``model_unavailable`` when no model could be loaded.
    """
    slot: ModelSlot = current_app.extensions[EXTENSION]
    if slot.predictor is None:
        raise ApiError(503, "model_unavailable", unavailable_message())
    return slot.predictor
