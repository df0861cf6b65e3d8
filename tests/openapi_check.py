"""Check a real answer against the schema ``/openapi.json`` documents for it."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCUMENT_URI = "urn:catdog:openapi"


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


def documented_schema(document: dict, path: str, method: str, status: int, media_type: str = "application/json"):
    """The ``$ref`` to the schema documented for ``status`` (else ``default``) of ``method path``."""
    responses = document["paths"][path][method.lower()]["responses"]
    key = str(status) if str(status) in responses else "default"
    assert key in responses, f"{method} {path} does not document status {status}"
    assert media_type in responses[key].get("content", {}), f"{method} {path} {key} does not document {media_type}"
    return {
        "$ref": DOCUMENT_URI
        + "#"
        + _pointer("paths", path, method.lower(), "responses", key, "content", media_type, "schema")
    }


def validate_answer(document: dict, path: str, method: str, status: int, body: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``body`` matches what the document says for this answer."""
    registry = Registry().with_resource(DOCUMENT_URI, Resource.from_contents(document, DRAFT202012))
    Draft202012Validator(documented_schema(document, path, method, status), registry=registry).validate(body)
