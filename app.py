"""The catdog web service.

Run it with gunicorn (settings in gunicorn.conf.py, which reads the
environment)::

    gunicorn -c gunicorn.conf.py app:app

``create_app`` builds an app from config.yaml (``CATDOG_CONFIG`` and
``CATDOG__SECTION__KEY`` variables apply); a test passes a mapping with
``CATDOG_CONFIG`` (a YAML path) and ``CATDOG_OVERRIDES`` (dotted keys).
The model is loaded and warmed up when gunicorn first reads ``app``, so each
worker (``preload_app = False``) loads its own before serving; a missing or broken
model leaves the app running and answering 503 with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from catdog.config import load_config
from catdog.web import api, errors, model, monitoring, pages, security, uploads


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app.

    Args:
        test_config: Flask config values; ``CATDOG_CONFIG`` names a YAML file
            and ``CATDOG_OVERRIDES`` maps dotted keys (``model.path``) to values.

    Returns:
        The app, with its model loaded (or the reason it could not be).

    Raises:
        ConfigError: The configuration itself is invalid.
    """
    app = Flask(__name__)
    app.request_class = uploads.MemoryRequest
    app.config.from_mapping(CATDOG_CONFIG=None, CATDOG_OVERRIDES={})
    if test_config is not None:
        app.config.from_mapping(test_config)
    settings = load_config(app.config["CATDOG_CONFIG"]).with_overrides(app.config["CATDOG_OVERRIDES"])
    app.config["CATDOG_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = uploads.transport_limit(settings.serving.max_upload_bytes)

    errors.init_app(app)
    security.init_app(app)
    model.init_app(app, settings)
    monitoring.init_app(app, model.load_seconds(app))
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    return app


def __getattr__(name: str) -> Flask:
    """``app``, what gunicorn serves, is built on first use: importing this module loads no model."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = built = create_app()
    return built
