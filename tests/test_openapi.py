"""``GET /openapi.json``: a valid OpenAPI 3.1 document that describes the real app and its real answers."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import jsonschema
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from test_web import BAD_INPUTS, multipart, truncated_jpeg

from catdog.web.errors import STATUS_BY_REASON
from catdog.web.openapi import error_codes
from helpers import CLASSES_OVERRIDE, make_photo, png_declaring
from openapi_check import validate_answer

WEB_SOURCES = Path(__file__).resolve().parents[1] / "src" / "catdog" / "web"


@pytest.fixture(scope="module")
def document(app) -> dict:
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    validate(document)


def test_the_validator_is_not_a_rubber_stamp(document):
    broken = {**document, "paths": {"/predict": {"post": {"responses": {"200": {"content": {}}}}}}}
    with pytest.raises(OpenAPIValidationError):
        validate(broken)  # a response without its description


def _documented_operations(document: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


def test_every_route_is_documented_and_every_documented_route_exists(app, document):
    routes = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == _documented_operations(document)


def test_every_error_code_of_the_web_layer_is_documented_under_its_status():
    codes = error_codes()
    raised = set()
    for source in WEB_SOURCES.glob("*.py"):
        raised |= {(int(s), c) for s, c in re.findall(r'ApiError\(\s*(\d{3}),\s*"(\w+)"', source.read_text())}
    raised |= {(status, reason) for reason, status in STATUS_BY_REASON.items()}
    assert len(raised) > 10  # the scan found the codes
    missing = {(status, code) for status, code in raised if code not in codes.get(status, [])}
    assert not missing, f"raised but not documented: {sorted(missing)}"


def test_the_document_uses_the_configured_classes_and_limits(app, document):
    schemas = document["components"]["schemas"]
    assert schemas["Prediction"]["properties"]["label"]["enum"] == ["Cat", "Dog", "Other"]
    assert schemas["BatchAnswer"]["properties"]["predictions"]["maxItems"] == 16
    assert "10 MiB" in document["paths"]["/predict"]["post"]["description"]
    forms = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(forms) == {"multipart/form-data", "image/*", "application/octet-stream", "application/json"}
    assert [p["name"] for p in document["paths"]["/predict"]["post"]["parameters"]] == ["explain"]


def test_the_page_footer_links_to_the_document(client):
    assert 'href="/openapi.json"' in client.get("/").get_data(as_text=True)


# --- real answers match the documented schemas ---------------------------------------------------


def check(document, response, path: str, method: str) -> dict:
    body = response.get_json()
    assert body is not None, response.get_data(as_text=True)
    validate_answer(document, path, method, response.status_code, body)
    return body


GOOD_REQUESTS = {
    "multipart": lambda: {"data": multipart(make_photo()), "content_type": "multipart/form-data"},
    "multipart-explain": lambda: {"data": multipart(make_photo(), explain="1"), "content_type": "multipart/form-data"},
    "raw": lambda: {"data": make_photo(), "content_type": "image/jpeg"},
    "octet-stream": lambda: {"data": make_photo(fmt="PNG"), "content_type": "application/octet-stream"},
    "json": lambda: {"json": {"image": base64.b64encode(make_photo()).decode(), "explain": True}},
    "batch-multipart": lambda: {
        "data": multipart(make_photo(), make_photo(seed=1)),
        "content_type": "multipart/form-data",
    },
    "batch-json": lambda: {"json": {"images": [base64.b64encode(make_photo(seed=s)).decode() for s in range(3)]}},
    "batch-with-bad-items": lambda: {
        "data": multipart(make_photo(), b"junk", b"", truncated_jpeg(), png_declaring(100_000, 100_000)),
        "content_type": "multipart/form-data",
    },
    "batch-json-bad-base64": lambda: {"json": {"images": [base64.b64encode(make_photo()).decode(), "@@"]}},
}


@pytest.mark.parametrize("make_request", list(GOOD_REQUESTS.values()), ids=list(GOOD_REQUESTS))
def test_predict_answers_match_the_document(client, document, make_request):
    response = client.post("/predict?explain=1", **make_request())
    assert response.status_code == 200
    check(document, response, "/predict", "post")


@pytest.mark.parametrize(
    "make_request, status, code", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS]
)
def test_predict_errors_match_the_document(client, document, make_request, status, code):
    response = client.post("/predict", **make_request())
    assert response.status_code == status
    assert check(document, response, "/predict", "post")["error"]["code"] == code


@pytest.mark.parametrize(
    "method, path, documented_path, status",
    [
        ("get", "/health", "/health", 200),
        ("get", "/ready", "/ready", 200),
        ("get", "/model", "/model", 200),
        ("get", "/openapi.json", "/openapi.json", 200),
        ("get", "/model?x=1", "/model", 400),
        ("post", "/predict?explian=1", "/predict", 400),
        ("get", "/predict", "/predict", 405),
        ("delete", "/health", "/health", 405),
    ],
)
def test_other_answers_match_the_document(client, document, method, path, documented_path, status):
    response = getattr(client, method)(path)
    assert response.status_code == status
    # A 405 is documented under the route's own operation, as its default (any other error).
    operations = document["paths"][documented_path]
    documented_method = method if method in operations else next(iter(operations))
    check(document, response, documented_path, documented_method)


def test_answers_without_a_model_match_the_document(tmp_path, document):
    from app import create_app

    overrides = {"model.path": str(tmp_path / "missing.h5"), **CLASSES_OVERRIDE}
    client = create_app({"TESTING": True, "CATDOG_OVERRIDES": overrides}).test_client()
    for method, path in (("get", "/ready"), ("get", "/model")):
        response = getattr(client, method)(path)
        assert response.status_code == 503
        check(document, response, path, method)
    response = client.post("/predict", data=make_photo(), content_type="image/jpeg")
    assert check(document, response, "/predict", "post")["error"]["code"] == "model_unavailable"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/predict", {"label": "Bird", "confidence": 0.9, "probabilities": {"Cat": 0.1}, "model": {}, "time_ms": 1}),
        ("/predict", {"predictions": [{"error": {"code": "not_image"}}], "model": {}, "time_ms": 1}),
        ("/health", {"status": "fine"}),
        (
            "/predict",
            {
                "label": "Cat",
                "confidence": 0.35,
                "probabilities": {"Cat": 0.35, "Dog": 0.03, "Other": 0.62},
                "note": 1,
                "model": {"architecture": "x", "version": "0.1.0+3fa4c2d19b0e.float", "sha256_short": "3fa4c2d19b0e"},
                "time_ms": 1,
            },
        ),
    ],
    ids=["unknown-label", "error-without-message", "health-not-ok", "note-not-text"],
)
def test_answers_that_break_the_document_are_caught(document, path, body):
    method = "post" if path == "/predict" else "get"
    with pytest.raises(jsonschema.ValidationError):
        validate_answer(document, path, method, 200, body)


def test_an_answer_with_a_note_and_a_model_with_a_decision_bias_match_the_document(client, app, document, monkeypatch):
    predictor = app.extensions["catdog.model"].predictor
    plain = client.post("/predict", data=make_photo(), content_type="image/jpeg").get_json()
    bias = [0.0, 0.0, 0.0]
    bias[["Cat", "Dog", "Other"].index(plain["label"])] = -50.0
    monkeypatch.setattr(predictor, "decision_bias", tuple(bias))
    body = check(document, client.post("/predict", data=make_photo(), content_type="image/jpeg"), "/predict", "post")
    assert "note" in body and "note" in document["components"]["schemas"]["Prediction"]["properties"]
    info = check(document, client.get("/model"), "/model", "get")
    assert info["calibration_decision_bias"] == bias


def test_an_undocumented_error_code_is_caught(document):
    body = {"error": {"code": "not_image", "message": "415's code under 400"}}
    with pytest.raises(jsonschema.ValidationError):
        validate_answer(document, "/predict", "post", 400, body)


def test_the_page_form_is_documented_as_html(client, document):
    operation = document["paths"]["/"]["post"]
    response = client.post("/", data={"file": (io.BytesIO(b"junk"), "x.jpg")}, content_type="multipart/form-data")
    assert response.status_code == 415 and "text/html" in operation["responses"]["415"]["content"]
