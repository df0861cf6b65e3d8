"""The catdog web app's factory: ``create_app`` assembles the app and nothing else.

gunicorn serves it from any working folder (settings in the checkout's
gunicorn.conf.py, whose default app is ``catdog.web.app:create_app()``)::

    CATDOG_CONFIG=/path/to/config.yaml gunicorn -c /path/to/gunicorn.conf.py

From a checkout, ``gunicorn app:app`` serves the same app through the
top-level ``app.py``. The settings come from config.yaml (``CATDOG_CONFIG`` and
``CATDOG__SECTION__KEY`` variables apply); a test passes a mapping with
``CATDOG_CONFIG`` (a YAML path) and ``CATDOG_OVERRIDES`` (dotted keys). The
pages (``templates/`` and ``static/``) are read from ``serving.site_dir``, by
default the config file's folder: they are not part of the installed package.
Each worker (``preload_app = False``) loads and warms up its own model when it
builds the app; a missing or broken model leaves the app running and
answering 503 with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from catdog.config import load_config
from catdog.errors import ConfigError
from catdog.web import api, errors, model, monitoring, pages, security, uploads


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the web app.

    Args:
        test_config: Flask config values; ``CATDOG_CONFIG`` names a YAML file
            and ``CATDOG_OVERRIDES`` maps dotted keys (``model.path``) to values.

    Returns:
        The app, with its model loaded (or the reason it could not be).

    Raises:
        ConfigError: The configuration itself is invalid, or ``serving.site_dir``
            holds no pages.
    """
    config: dict[str, Any] = {"CATDOG_CONFIG": None, "CATDOG_OVERRIDES": {}, **(test_config or {})}
    settings = load_config(config["CATDOG_CONFIG"]).with_overrides(config["CATDOG_OVERRIDES"])
    site = site_folder(settings.serving.site_dir)
    app = Flask(
        __name__,
        template_folder=str(site / "templates"),
        static_folder=str(site / "static"),
        static_url_path="/static",
    )
    app.request_class = uploads.MemoryRequest
    app.config.from_mapping(config)
    app.config["CATDOG_SETTINGS"] = settings
    app.config["MAX_CONTENT_LENGTH"] = uploads.transport_limit(settings.serving.max_upload_bytes)

    errors.init_app(app)
    security.init_app(app)
    model.init_app(app, settings)
    monitoring.init_app(app, model.load_seconds(app))
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    return app


def site_folder(site_dir: str) -> Path:
    """The absolute folder of the app's pages (Flask would read a relative one against this package's folder).

    Raises:
        ConfigError: It has no ``templates/index.html``: a worker that started anyway
            would answer 500 to the upload page, and only to it.
    """
    site = Path(site_dir).expanduser().resolve()
    if not (site / "templates" / "index.html").is_file():
        raise ConfigError(
            f"serving.site_dir: no templates/index.html in {str(site)!r}; "
            "name the folder that holds the app's templates/ and static/ (a catdog checkout)"
        )
    return site
