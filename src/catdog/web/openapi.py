"""The OpenAPI 3.1 document served at ``GET /openapi.json``.

Written by hand, as a Python mapping, rather than generated: the routes read
one body in three forms (multipart, a raw image, JSON with base64) and answer
two shapes (one image or a batch), which the generators (apispec,
flask-openapi3) would still need spelled out as hand-written schemas or
pydantic models around every view, for one more dependency. What keeps this
document true is the tests: it is checked with ``openapi-spec-validator``,
every route of the app must appear in it and every path in it must exist,
every ``ApiError`` code in the web layer must be listed under its status,
and real answers, good and bad, are validated against its schemas.

The values that come from the configuration (classes, batch size, upload
limit, formats) are filled in from the settings, so the document describes
this deployment.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import catdog
from catdog.config import Settings
from catdog.web.errors import STATUS_BY_REASON, format_bytes

JSON = "application/json"
HTML = "text/html"

# Codes of the errors raised by the web layer itself; the image refusals come from STATUS_BY_REASON.
REQUEST_ERROR_CODES = {
    400: [
        "no_file",
        "bad_body",
        "bad_multipart",
        "too_many_files",
        "bad_json",
        "bad_base64",
        "unknown_parameter",
        "bad_request",
    ],
    413: ["payload_too_large", "too_many_parts", "field_too_large"],
    415: ["unsupported_media_type"],
    503: ["model_unavailable"],
}
# Any route: an unknown path, a method the route does not take, a bug.
GENERIC_ERROR_CODES = {404: ["not_found"], 405: ["method_not_allowed"], 500: ["internal_error"]}
PREDICT_STATUSES = (400, 413, 415, 422, 503)
STATUS_TEXT = {
    400: "The request is malformed (a cut-off or malformed body, one shorter than its Content-Length), has no "
    "image, too many images or an unknown query parameter; or an image is empty.",
    413: "The request is larger than the upload limit, has more than 1,000 form parts, or a text field over 500 kB.",
    415: "Not an image, an image format that is not accepted, or a Content-Type that is not accepted.",
    422: "An image that cannot be used: damaged, too large or too small in pixels (alone or all images of the "
    "request together), or a JPEG with too many scans to decode in time.",
    503: "No model is loaded (missing or broken model file, or one whose outputs do not match the classes).",
}


def error_codes() -> dict[int, list[str]]:
    """Every error code the API answers, by HTTP status."""
    codes: dict[int, list[str]] = defaultdict(list)
    for reason, status in STATUS_BY_REASON.items():
        codes[status].append(reason)
    for table in (REQUEST_ERROR_CODES, GENERIC_ERROR_CODES):
        for status, names in table.items():
            codes[status].extend(name for name in names if name not in codes[status])
    return dict(codes)


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app configured by ``settings``."""
    serving = settings.serving
    classes = list(settings.data.classes)
    codes = error_codes()
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "catdog",
            "version": catdog.__version__,
            "summary": f"Tell whether a photo shows {_classes_text(classes)}.",
            "description": (
                'Every error answers `{"error": {"code", "message"}}`; the code is stable, the message is for '
                "people. A query parameter a route does not know answers 400 `unknown_parameter`."
            ),
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/predict": _predict_path(serving, codes),
            "/health": _get(
                "health", "The process is alive (says nothing about the model).", _json_ok("It is.", _ref("Health"))
            ),
            "/ready": _get(
                "ready",
                "Whether the model is loaded and warmed up.",
                _json_ok("Ready to classify.", _ref("Ready")),
                {"503": {"description": "Not ready.", "content": {JSON: {"schema": _ref("NotReady")}}}},
            ),
            "/model": _get(
                "modelInfo",
                "The loaded model: architecture, input size, classes, file hash, version, metrics.",
                _json_ok("The model.", _ref("ModelInfo")),
                {"503": _error_response(STATUS_TEXT[503], codes[503])},
            ),
            "/metrics": _get(
                "metrics",
                "Prometheus metrics of all workers (requests, latency, predictions by label, top probability, "
                "images per request, model load time).",
                {
                    "200": {
                        "description": "Prometheus's text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
            "/openapi.json": _get(
                "openapi",
                "This document.",
                _json_ok("The OpenAPI 3.1 document.", {"type": "object", "required": ["openapi", "paths"]}),
            ),
            **_page_paths(),
        },
        "components": {"schemas": _schemas(classes, serving.max_batch, codes)},
    }


def _predict_path(serving, codes: dict[int, list[str]]) -> dict[str, Any]:
    """``/predict``: one image or a batch, in any of the accepted forms."""
    explain = {
        "name": "explain",
        "in": "query",
        "required": False,
        "description": "Also return a Grad-CAM heatmap of each image: 1, true, yes or on.",
        "schema": {"type": "string"},
    }
    predict_errors = {str(status): _error_response(STATUS_TEXT[status], codes[status]) for status in PREDICT_STATUSES}
    return {
        "post": {
            "operationId": "predict",
            "summary": "Classify one image, or a batch of images in one forward pass.",
            "description": (
                f"Send one image, or up to {serving.max_batch} (a batch), at most "
                f"{format_bytes(serving.max_upload_bytes)} of images in all, in any of the forms below. "
                "Several `file` fields, or JSON `images`, make a batch: its answer lists one item per "
                'image, in order, each a prediction or `{"error": {"code", "message"}}` for an '
                "image that was refused. A batch is refused as a whole only when none of its images "
                "can be read (then with the first image's status and code) or the request itself is bad."
            ),
            "parameters": [explain],
            "requestBody": _predict_body(serving.max_batch, list(serving.accepted_formats)),
            "responses": {
                "200": {
                    "description": "One answer for one image, or a list for a batch.",
                    "content": {JSON: {"schema": {"oneOf": [_ref("Answer"), _ref("BatchAnswer")]}}},
                },
                **predict_errors,
                "default": _generic_error(codes),
            },
        }
    }


def _page_paths() -> dict[str, Any]:
    """The upload page and its static files."""
    return {
        "/": {
            "get": {
                "operationId": "page",
                "summary": "The upload page.",
                "responses": {"200": _html("The page.")},
            },
            "post": {
                "operationId": "pageClassify",
                "summary": "The page's form without JavaScript: the page again, with the result or the error.",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _form_schema(1)}},
                },
                "responses": {
                    "200": _html("The page with the result."),
                    **{str(status): _html(STATUS_TEXT[status]) for status in PREDICT_STATUSES},
                },
            },
        },
        "/static/{filename}": {
            "get": {
                "operationId": "static",
                "summary": "The page's script, style sheet and icon.",
                "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The file."}, "404": {"description": "No such file."}},
            }
        },
    }


def _schemas(classes: list[str], max_batch: int, codes: dict[int, list[str]]) -> dict[str, Any]:
    every_code = sorted({code for names in codes.values() for code in names})
    prediction = _prediction_fields(classes)
    answer_fields = {"model": _ref("ModelSummary"), "time_ms": {"type": "number", "minimum": 0}}
    return {
        "ErrorDetail": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "enum": every_code, "description": "Stable, for programs."},
                "message": {"type": "string", "description": "For people."},
            },
            "required": ["code", "message"],
            "additionalProperties": False,
        },
        "Error": _object({"error": _ref("ErrorDetail")}),
        "Prediction": _object(prediction, ["label", "confidence", "probabilities"]),
        "Answer": _object(
            {**prediction, **answer_fields}, ["label", "confidence", "probabilities", "model", "time_ms"]
        ),
        "BatchAnswer": _object(
            {
                "predictions": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": max_batch,
                    "description": "One item per image, in the order sent: a prediction or why the image was refused.",
                    "items": {"oneOf": [_ref("Prediction"), _ref("Error")]},
                },
                **answer_fields,
            }
        ),
        "ModelSummary": _object(
            {
                "architecture": {"type": "string"},
                "version": {
                    "type": "string",
                    "description": "Package version, the model file's short hash and the precision served "
                    "(`float` or `int8`): `0.1.0+3fa4c2d19b0e.int8`.",
                    "pattern": "^.+\\+[0-9a-f]{12}\\.(float|int8)$",
                },
                "sha256_short": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
            }
        ),
        "Health": _object({"status": {"const": "ok"}}),
        "Ready": _object({"ready": {"const": True}, "model": _ref("ModelSummary")}),
        "NotReady": _object({"ready": {"const": False}, "error": _ref("ErrorDetail")}),
        "ModelInfo": {
            "type": "object",
            "properties": {
                "architecture": {"type": "string"},
                "input_size": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
                "classes": {"type": "array", "items": {"type": "string"}, "const": classes},
                "parameters": {"type": "integer"},
                "file": {"type": "string"},
                "file_bytes": {"type": "integer"},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "sha256_short": {"type": "string", "pattern": "^[0-9a-f]{12}$"},
                "version": {"type": "string"},
                "runtime": {"type": "string", "enum": ["litert", "tensorflow"]},
                "metrics": {
                    "type": ["object", "null"],
                    "description": "metrics.json beside the model, if any, without library versions and hardware.",
                },
                "precision": {"enum": ["float", "int8"], "description": "The arithmetic of the forward pass."},
                "precision_note": {
                    "type": ["string", "null"],
                    "description": "Why the int8 twin is not served (missing, refused by its check...); null if it is.",
                },
                "calibration_temperature": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "description": "T of `softmax(log(p) / T + class_bias)`; 1 when the model is served uncalibrated.",
                },
                "calibration_class_bias": {
                    "type": ["array", "null"],
                    "items": {"type": "number"},
                    "minItems": len(classes),
                    "maxItems": len(classes),
                    "description": "The calibration's logit offset per class, in `classes` order; null for none.",
                },
                "calibration_decision_bias": {
                    "type": "array",
                    "items": {"type": "number"},
                    "minItems": len(classes),
                    "maxItems": len(classes),
                    "description": "Offsets added to the log-probabilities when choosing the answer, never to the "
                    "probabilities (a limit on the pets answered Other); zeros: the answer is the most probable class.",
                },
            },
            "required": ["architecture", "input_size", "classes", "sha256", "sha256_short", "version", "runtime"],
            "description": "Library versions and the training hardware are not published.",
        },
    }


def _prediction_fields(classes: list[str]) -> dict[str, Any]:
    """The fields of one prediction."""
    return {
        "label": {
            "type": "string",
            "enum": classes,
            "description": "The answer: the most probable class, unless the model's decision bias "
            "(`calibration_decision_bias` in `/model`) sets a higher bar for that class.",
        },
        "confidence": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "The calibrated probability of the answer (below another class's when `note` is present).",
        },
        "note": {
            "type": "string",
            "description": "Only when the answer is not the most probable class: why, in one sentence.",
        },
        "probabilities": {
            "type": "object",
            "description": "The probability of every class; they add up to 1.",
            "properties": {name: {"type": "number", "minimum": 0, "maximum": 1} for name in classes},
            "required": classes,
            "additionalProperties": False,
        },
        "heatmap_png_base64": {
            "type": "string",
            "contentEncoding": "base64",
            "contentMediaType": "image/png",
            "description": "With `explain`: where the model looked, over the photo, as a base64 PNG.",
        },
    }


def _predict_body(max_batch: int, formats: list[str]) -> dict[str, Any]:
    image = {"type": "string", "contentMediaType": "image/*"}
    base64_image = {
        "type": "string",
        "description": "The image in base64 (plain or URL-safe) or as a data: URL.",
    }
    flag = {"type": ["boolean", "string", "integer"], "description": "true, or as the `explain` query parameter."}
    return {
        "required": True,
        "description": f"Accepted formats: {', '.join(formats)}.",
        "content": {
            "multipart/form-data": {
                "schema": _form_schema(max_batch),
                "encoding": {"file": {"contentType": "image/*, application/octet-stream"}},
            },
            "image/*": {"schema": image},
            "application/octet-stream": {"schema": image},
            JSON: {
                "schema": {
                    "oneOf": [
                        _object({"image": base64_image, "explain": flag}, ["image"]),
                        _object(
                            {
                                "images": {
                                    "type": "array",
                                    "items": base64_image,
                                    "minItems": 1,
                                    "maxItems": max_batch,
                                },
                                "explain": flag,
                            },
                            ["images"],
                        ),
                    ]
                }
            },
        },
    }


def _form_schema(max_files: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "file": {
                "type": "array",
                "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                "minItems": 1,
                "maxItems": max_files,
                "description": "One image, or several fields of the same name for a batch.",
            },
            "explain": {"type": "string", "description": "Same as the `explain` query parameter."},
        },
        "required": ["file"],
    }


def _get(operation_id: str, summary: str, ok: dict, extra: dict | None = None) -> dict[str, Any]:
    """A GET operation that takes no query parameters (an unknown one answers 400)."""
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "responses": {
                **ok,
                **(extra or {}),
                "400": _error_response("A query parameter was sent; this route takes none.", ["unknown_parameter"]),
                "default": _generic_error(error_codes()),
            },
        }
    }


def _json_ok(description: str, schema: dict) -> dict[str, Any]:
    return {"200": {"description": description, "content": {JSON: {"schema": schema}}}}


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {HTML: {"schema": {"type": "string"}}}}


def _error_response(description: str, codes: list[str]) -> dict[str, Any]:
    """An error answer whose code is one of ``codes``."""
    detail = {
        "allOf": [_ref("ErrorDetail")],
        "properties": {"code": {"enum": codes}},
    }
    return {
        "description": f"{description} Codes: {', '.join(codes)}.",
        "content": {JSON: {"schema": _object({"error": detail})}},
    }


def _generic_error(codes: dict[int, list[str]]) -> dict[str, Any]:
    named = [code for status in sorted(GENERIC_ERROR_CODES) for code in codes[status]]
    return _error_response("404 unknown path, 405 method not allowed, 500 an error on the server side.", named)


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _classes_text(classes: list[str]) -> str:
    return ", ".join(classes[:-1]) + f" or {classes[-1]}" if len(classes) > 1 else classes[0]
