"""The catdog web service, from a checkout: ``gunicorn app:app`` (settings in gunicorn.conf.py).

The app itself is :func:`catdog.web.app.create_app`; an installed catdog serves
it from any folder (see that module). ``app``, what gunicorn serves, is built on
first use, so importing this module loads no model.
"""

from __future__ import annotations

from flask import Flask

from catdog.web.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Flask:
    """Build ``app`` once, when gunicorn (or a test) first reads it."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = built = create_app()
    return built
