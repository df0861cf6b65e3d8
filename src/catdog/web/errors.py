"""Turn refused inputs and HTTP errors into JSON (API) or a page (browser).

Every API error has the body ``{"error": {"code": ..., "message": ...}}``.
The statuses: 400 no file, empty file, bad base64 or JSON; 413 an upload
over the size limit; 415 not an image, an unsupported format or media type;
422 an image refused for its size in pixels (one image's or the request's
total), a JPEG too complex to decode (``too_complex``) or damaged data; 404/405 unknown
path or method; 503 no model. A bad input never reaches the generic 500.
"""

from __future__ import annotations

import logging

from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from catdog.errors import InvalidImage
from catdog.web.error_body import error_body

log = logging.getLogger(__name__)

STATUS_BY_REASON = {
    "empty": 400,
    "not_image": 415,
    "unsupported_format": 415,
    "corrupt": 422,
    "too_large": 422,
    "too_small": 422,
    "too_complex": 422,
}

_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    """A request the web layer refuses, with its HTTP status.

    Attributes:
        status: HTTP status code.
        code: Short machine-readable code for the JSON body.
        message: Sentence for people, shown on the page as well.
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        """The JSON error body (:func:`catdog.web.error_body.error_body`)."""
        return error_body(self.code, self.message)


def from_invalid_image(exc: InvalidImage) -> ApiError:
    """Map a refused image to its HTTP status; its reason becomes the code."""
    return ApiError(STATUS_BY_REASON.get(exc.reason, 422), exc.reason, exc.message)


def from_http(exc: HTTPException) -> ApiError:
    """Map a Werkzeug HTTP error to an :class:`ApiError` with a readable message."""
    status = exc.code or 500
    if status == 413:
        return payload_too_large(current_app.config["CATDOG_SETTINGS"].serving.max_upload_bytes)
    if status == 404:
        message = "there is nothing at this address"
    elif status == 405:
        allowed = ", ".join(sorted(getattr(exc, "valid_methods", None) or ()))
        message = f"method {request.method} is not allowed here" + (f" (allowed: {allowed})" if allowed else "")
    else:
        message = exc.description or exc.name
    return ApiError(status, _HTTP_CODES.get(status, exc.name.lower().replace(" ", "_")), message)


def payload_too_large(limit: int) -> ApiError:
    """The 413 error for a request over ``limit`` bytes of images."""
    return ApiError(413, "payload_too_large", f"the upload is larger than the limit of {format_bytes(limit)}")


def format_bytes(count: int) -> str:
    """Format a byte count for people: ``10 MiB``, ``512 KiB``, ``20 bytes``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{count} bytes"


def is_api_path(path: str) -> bool:
    """Whether ``path`` is one of the API blueprint's routes."""
    return any(rule.rule == path and rule.endpoint.startswith("api.") for rule in current_app.url_map.iter_rules())


def wants_json() -> bool:
    """API routes always answer JSON; other paths follow the Accept header."""
    if is_api_path(request.path):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best != "text/html"


def json_error(error: ApiError):
    """The JSON response for ``error``."""
    response = jsonify(error.body())
    response.status_code = error.status
    return response


def _respond(error: ApiError):
    if wants_json():
        return json_error(error)
    return render_template("error.html", error=error), error.status


def init_app(app: Flask) -> None:
    """Register the error handlers on ``app``."""

    @app.errorhandler(ApiError)
    def handle_api_error(exc: ApiError):
        return _respond(exc)

    @app.errorhandler(InvalidImage)
    def handle_invalid_image(exc: InvalidImage):
        return _respond(from_invalid_image(exc))

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        return _respond(from_http(exc))

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _respond(ApiError(500, "internal_error", "something went wrong on our side; please try again"))
