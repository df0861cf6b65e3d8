"""The API's error body, ``{"error": {"code": ..., "message": ...}}``, built in this one place.

The app answers it for every refused request (:mod:`catdog.web.errors`), and
the worker for the requests it refuses before the app sees them
(:mod:`catdog.web.worker`). No Flask here: the gunicorn master imports the
worker, and it never needs Flask.
"""

from __future__ import annotations


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON error body: a whole answer, or one image's item of a batch answer.

    Args:
        code: Short machine-readable code, stable across versions.
        message: Sentence for people.

    Returns:
        ``{"error": {"code": code, "message": message}}``.
    """
    return {"error": {"code": code, "message": message}}
