"""Tests for the web app (catdog.web.app.create_app, which app.py serves) through Flask's test client."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import catdog
from helpers import CLASSES, make_photo, png_declaring

MAX_UPLOAD = 10 * 1024 * 1024  # serving.max_upload_bytes in config.yaml


def multipart(*images: bytes, names: list[str] | None = None, **fields) -> dict:
    names = names or [f"photo{i}.jpg" for i in range(len(images))]
    return {"file": [(io.BytesIO(data), name) for data, name in zip(images, names, strict=True)], **fields}


def post_file(client, data: bytes, name: str = "photo.jpg", url: str = "/predict", **fields):
    return client.post(url, data=multipart(data, names=[name], **fields), content_type="multipart/form-data")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error


def assert_prediction(body: dict) -> None:
    assert body["label"] in CLASSES
    assert list(body["probabilities"]) == list(CLASSES)
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["confidence"] == body["probabilities"][body["label"]]
    # The answer is the most probable class, unless a note says why not.
    assert ("note" in body) == (body["confidence"] < max(body["probabilities"].values()))


def decoded_png(text: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(text)))
    assert image.format == "PNG"
    return image


# --- factory -------------------------------------------------------------------


def test_app_uses_config_and_memory_uploads(app):
    from catdog.web.uploads import MemoryRequest

    assert app.config["CATDOG_SETTINGS"].serving.max_upload_bytes == MAX_UPLOAD
    assert app.config["MAX_CONTENT_LENGTH"] > MAX_UPLOAD
    assert app.request_class is MemoryRequest


def test_importing_app_without_a_model_starts_and_stays_light(tmp_path):
    code = (
        "import sys, app; c = app.app.test_client(); "
        "print(c.get('/ready').status_code, c.get('/health').status_code, 'tensorflow' in sys.modules)"
    )
    env = {**os.environ, "CATDOG__MODEL__PATH": str(tmp_path / "missing.h5")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=app_root())
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["503", "200", "False"]


def _config_elsewhere(folder, shipped_config: dict, **serving) -> str:
    """A copy of config.yaml in ``folder`` whose model is missing (the pages need none)."""
    import yaml

    shipped_config["model"]["path"] = str(folder / "missing.h5")
    shipped_config["serving"].pop("site_dir")
    shipped_config["serving"].update(serving)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(shipped_config), encoding="utf-8")
    return str(folder / "config.yaml")


def test_an_app_run_from_another_folder_serves_the_pages_its_config_names(tmp_path, shipped_config, monkeypatch):
    from catdog.web.app import create_app

    # A relative site_dir is read against the config file's folder, not the working one.
    config = _config_elsewhere(tmp_path / "etc", shipped_config, site_dir=os.path.relpath(app_root(), tmp_path / "etc"))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    client = create_app({"TESTING": True, "CATDOG_CONFIG": config}).test_client()
    page = client.get("/")
    assert page.status_code == 200 and b"<form" in page.data
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert script.data == (Path(app_root()) / "static" / "app.js").read_bytes()


def test_without_site_dir_the_pages_are_looked_for_beside_the_config_and_their_absence_stops_the_app(
    tmp_path, shipped_config
):
    from catdog.errors import ConfigError
    from catdog.web.app import create_app

    config = _config_elsewhere(tmp_path / "etc", shipped_config)
    with pytest.raises(ConfigError, match=f"serving.site_dir: no templates/index.html in '{tmp_path / 'etc'}'"):
        create_app({"TESTING": True, "CATDOG_CONFIG": config})


def app_root() -> str:
    from catdog.config import PROJECT_ROOT

    return str(PROJECT_ROOT)


@pytest.fixture(params=["missing", "broken"])
def modelless_client(request, tmp_path):
    from app import create_app

    path = tmp_path / "model.h5"
    if request.param == "broken":
        path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    return create_app({"TESTING": True, "CATDOG_OVERRIDES": {"model.path": str(path)}}).test_client()


def test_without_a_model_predictions_answer_503(modelless_client):
    error = assert_error(post_file(modelless_client, make_photo()), 503, "model_unavailable")
    assert "model is not available" in error["message"]
    assert_error(modelless_client.get("/model"), 503, "model_unavailable")
    ready = modelless_client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json()["ready"] is False
    assert modelless_client.get("/health").status_code == 200


def test_without_a_model_the_page_says_so(modelless_client):
    page = modelless_client.get("/")
    assert page.status_code == 200
    assert b'id="model-status"' in page.data and b"model is not available" in page.data
    response = post_file(modelless_client, make_photo(), url="/")
    assert response.status_code == 503
    assert b"model is not available" in response.data


# --- simple routes -------------------------------------------------------------


def test_health(client):
    response = client.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_ready(client):
    body = client.get("/ready").get_json()
    assert body["ready"] is True
    assert body["model"]["architecture"] == "tinynet"
    assert len(body["model"]["sha256_short"]) == 12
    assert body["model"]["version"] == f"{catdog.__version__}+{body['model']['sha256_short']}.float"


def test_model_info(client):
    info = client.get("/model").get_json()
    assert info["architecture"] == "tinynet"
    assert info["input_size"] == [32, 32, 3]
    assert info["classes"] == ["Cat", "Dog", "Other"]
    assert info["version"] == f"{catdog.__version__}+{info['sha256_short']}.float"
    assert info["parameters"] > 0
    assert len(info["sha256"]) == 64 and info["sha256"].startswith(info["sha256_short"])
    assert info["metrics"]["test_accuracy"] == 0.5
    assert info["runtime"] in ("litert", "tensorflow")
    # Library versions and the training machine are not published.
    assert not {"runtime_version", "tensorflow_version", "keras_version"} & set(info)
    assert info["precision"] == "float" and "no model.int8.tflite" in info["precision_note"]
    # Metrics without a decision bias: zeros, the answer is the most probable class.
    assert info["calibration_decision_bias"] == [0.0, 0.0, 0.0]


def test_model_info_publishes_no_versions_or_hardware_at_any_depth():
    from catdog.web.api import public_model_info

    info = {
        "runtime": "litert",
        "runtime_version": "2.3.0",
        "metrics": {"versions": {"pillow": "13"}, "hardware": "H100", "members": [{"hardware": "x", "f1": 0.9}]},
    }
    assert public_model_info(info) == {"runtime": "litert", "metrics": {"members": [{"f1": 0.9}]}}


def test_index_page(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for marker in (
        'id="upload-form"',
        'id="file-input"',
        'for="file-input"',
        'id="result"',
        'aria-live="polite"',
        'id="result-label"',
        'id="heatmap"',
        'enctype="multipart/form-data"',
        'name="viewport"',
    ):
        assert marker in html
    assert "model-status" not in html
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]


def test_static_files_are_served(client):
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


# --- POST /predict: every input form -------------------------------------------


def test_predict_multipart(client):
    response = post_file(client, make_photo())
    assert response.status_code == 200
    body = response.get_json()
    assert_prediction(body)
    assert body["model"]["architecture"] == "tinynet"
    assert len(body["model"]["sha256_short"]) == 12
    assert body["model"]["version"] == f"{catdog.__version__}+{body['model']['sha256_short']}.float"
    assert body["time_ms"] > 0
    assert "heatmap_png_base64" not in body


@pytest.mark.parametrize("content_type", ["image/jpeg", "image/png", "application/octet-stream"])
def test_predict_raw_body(client, content_type):
    response = client.post("/predict", data=make_photo(), content_type=content_type)
    assert response.status_code == 200
    assert_prediction(response.get_json())


@pytest.mark.parametrize("prefix", ["", "data:image/jpeg;base64,"], ids=["base64", "data-url"])
def test_predict_json(client, prefix):
    encoded = prefix + base64.b64encode(make_photo()).decode()
    response = client.post("/predict", json={"image": encoded})
    assert response.status_code == 200
    assert_prediction(response.get_json())


def test_all_input_forms_agree(client):
    photo = make_photo(seed=3)
    answers = [
        post_file(client, photo).get_json(),
        client.post("/predict", data=photo, content_type="image/jpeg").get_json(),
        client.post("/predict", json={"image": base64.b64encode(photo).decode()}).get_json(),
    ]
    assert len({json.dumps(a["probabilities"], sort_keys=True) for a in answers}) == 1


def test_predict_batch_multipart_in_order(client):
    photos = [make_photo(seed=seed) for seed in range(3)]
    response = client.post("/predict", data=multipart(*photos), content_type="multipart/form-data")
    assert response.status_code == 200
    body = response.get_json()
    assert len(body["predictions"]) == 3
    for photo, item in zip(photos, body["predictions"], strict=True):
        assert_prediction(item)
        assert item["probabilities"] == post_file(client, photo).get_json()["probabilities"]
    assert body["model"]["architecture"] == "tinynet"


def test_predict_batch_json(client):
    images = [base64.b64encode(make_photo(seed=seed)).decode() for seed in range(2)]
    body = client.post("/predict", json={"images": images}).get_json()
    assert len(body["predictions"]) == 2


def test_predict_batch_is_one_forward_pass(client, app, monkeypatch):
    predictor = app.extensions["catdog.model"].predictor
    calls = []
    original = predictor.predict_arrays
    monkeypatch.setattr(predictor, "predict_arrays", lambda batch: calls.append(len(batch)) or original(batch))
    client.post("/predict", data=multipart(*[make_photo(seed=s) for s in range(4)]), content_type="multipart/form-data")
    assert calls == [4]


@pytest.fixture
def biased(app, client, monkeypatch):
    """``biased(photo)`` -> the same photo's answer without, then with, a decision bias against its top class."""
    predictor = app.extensions["catdog.model"].predictor

    def answers(photo: bytes) -> tuple[dict, dict]:
        monkeypatch.setattr(predictor, "decision_bias", (0.0, 0.0, 0.0))
        plain = post_file(client, photo).get_json()
        bias = [0.0, 0.0, 0.0]
        bias[CLASSES.index(plain["label"])] = -50.0
        monkeypatch.setattr(predictor, "decision_bias", tuple(bias))
        return plain, post_file(client, photo).get_json()

    return answers


def test_a_note_says_why_exactly_when_the_answer_is_not_the_most_probable_class(biased):
    plain, flipped = biased(make_photo(seed=5))
    assert "note" not in plain and plain["confidence"] == max(plain["probabilities"].values())
    assert flipped["label"] != plain["label"] and flipped["probabilities"] == plain["probabilities"]
    assert flipped["confidence"] == flipped["probabilities"][flipped["label"]] < plain["confidence"]
    percent = f"{plain['probabilities'][plain['label']]:.0%}"
    assert flipped["note"].startswith(f"{plain['label']} is likelier ({percent}), but the service answers")
    assert_prediction(plain)
    assert_prediction(flipped)


def test_the_json_of_a_prediction_has_a_note_only_when_its_label_is_not_the_top_class():
    from catdog.serving.inference import Prediction
    from catdog.web.api import prediction_json

    top = Prediction("Other", 0.62, {"Cat": 0.35, "Dog": 0.03, "Other": 0.62})
    held_back = Prediction("Cat", 0.35, {"Cat": 0.35, "Dog": 0.03, "Other": 0.62})
    assert "note" not in prediction_json(top)
    assert prediction_json(held_back)["note"] == (
        "Other is likelier (62%), but the service answers Other only when a photo is clearly neither a cat nor a dog."
    )


def test_predict_batch_over_the_limit(client):
    photos = [make_photo((16, 16), seed=seed) for seed in range(17)]
    response = client.post("/predict", data=multipart(*photos), content_type="multipart/form-data")
    assert_error(response, 400, "too_many_files")


@pytest.mark.parametrize("how", ["query", "form", "json"])
def test_explain_adds_a_heatmap(client, how):
    photo = make_photo((200, 150), "PNG")
    if how == "query":
        response = post_file(client, photo, url="/predict?explain=1")
    elif how == "form":
        response = post_file(client, photo, explain="1")
    else:
        response = client.post("/predict", json={"image": base64.b64encode(photo).decode(), "explain": True})
    body = response.get_json()
    assert_prediction(body)
    # Drawn on the photo as decoded: reduced by a whole factor while both sides stay at least
    # twice the model's input (32 for the tiny model), aspect kept.
    assert decoded_png(body["heatmap_png_base64"]).size == (100, 75)


def test_explain_in_a_batch(client):
    photos = [make_photo(seed=seed) for seed in range(2)]
    response = client.post("/predict?explain=1", data=multipart(*photos), content_type="multipart/form-data")
    items = response.get_json()["predictions"]
    assert response.status_code == 200 and len(items) == len(photos)  # an empty list must not pass
    for item in items:
        assert_prediction(item)
        decoded_png(item["heatmap_png_base64"])


def image_in(fmt: str, mode: str) -> bytes:
    photo = Image.open(io.BytesIO(make_photo((64, 48), "PNG")))
    if mode == "I;16":
        photo = Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257)
    else:
        photo = photo.convert(mode)
    buffer = io.BytesIO()
    photo.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, mode",
    [
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("PNG", "L"),
        ("PNG", "I;16"),
        ("GIF", "P"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("JPEG", "CMYK"),
        ("JPEG", "L"),
    ],
)
def test_every_accepted_format_and_mode(client, fmt, mode):
    response = client.post("/predict", data=image_in(fmt, mode), content_type="application/octet-stream")
    assert response.status_code == 200, response.get_json()
    assert_prediction(response.get_json())


# --- bad inputs ------------------------------------------------------------------


def truncated_jpeg() -> bytes:
    data = make_photo((200, 150))
    return data[: len(data) // 2]


def ppm() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buffer, format="PPM")
    return buffer.getvalue()


BAD_INPUTS = [
    # id, request keyword arguments, status, code
    (
        "random-bytes",
        lambda: {"data": multipart(os.urandom(2048)), "content_type": "multipart/form-data"},
        415,
        "not_image",
    ),
    (
        "truncated-jpeg",
        lambda: {"data": multipart(truncated_jpeg()), "content_type": "multipart/form-data"},
        422,
        "corrupt",
    ),
    ("zero-bytes", lambda: {"data": multipart(b""), "content_type": "multipart/form-data"}, 400, "empty"),
    ("zero-bytes-raw", lambda: {"data": b"", "content_type": "image/jpeg"}, 400, "empty"),
    (
        "png-100000x100000",
        lambda: {"data": png_declaring(100_000, 100_000), "content_type": "image/png"},
        422,
        "too_large",
    ),
    ("png-over-max-pixels", lambda: {"data": png_declaring(8000, 6000), "content_type": "image/png"}, 422, "too_large"),
    ("too-small", lambda: {"data": make_photo((4, 4)), "content_type": "image/jpeg"}, 422, "too_small"),
    (
        "unsupported-format",
        lambda: {"data": ppm(), "content_type": "application/octet-stream"},
        415,
        "unsupported_format",
    ),
    ("wrong-content-type", lambda: {"data": make_photo(), "content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("urlencoded-form", lambda: {"data": {"file": "photo.jpg"}}, 400, "no_file"),
    ("no-body", lambda: {}, 400, "no_file"),
    ("multipart-without-file", lambda: {"data": {"other": "x"}, "content_type": "multipart/form-data"}, 400, "no_file"),
    (
        "multipart-wrong-field",
        lambda: {"data": {"image": (io.BytesIO(make_photo()), "a.jpg")}, "content_type": "multipart/form-data"},
        400,
        "no_file",
    ),
    ("bad-base64", lambda: {"json": {"image": "this is not base64!"}}, 400, "bad_base64"),
    ("data-url-not-base64", lambda: {"json": {"image": "data:image/jpeg,abcd"}}, 400, "bad_base64"),
    ("base64-not-a-string", lambda: {"json": {"image": 12}}, 400, "bad_base64"),
    ("base64-of-text", lambda: {"json": {"image": base64.b64encode(b"hello world").decode()}}, 415, "not_image"),
    ("json-not-an-object", lambda: {"json": ["x"]}, 400, "bad_json"),
    ("json-without-image", lambda: {"json": {"picture": "x"}}, 400, "bad_json"),
    ("json-malformed", lambda: {"data": b"{not json", "content_type": "application/json"}, 400, "bad_json"),
    ("json-empty-images", lambda: {"json": {"images": []}}, 400, "bad_json"),
    (
        "over-limit-multipart",
        lambda: {"data": multipart(bytes(MAX_UPLOAD + 1)), "content_type": "multipart/form-data"},
        413,
        "payload_too_large",
    ),
    ("over-limit-raw", lambda: {"data": bytes(MAX_UPLOAD + 1), "content_type": "image/jpeg"}, 413, "payload_too_large"),
    (
        "over-transport-limit-raw",
        lambda: {"data": bytes(2 * MAX_UPLOAD), "content_type": "image/jpeg"},
        413,
        "payload_too_large",
    ),
    (
        "over-limit-json",
        lambda: {"json": {"image": base64.b64encode(bytes(MAX_UPLOAD + 1)).decode()}},
        413,
        "payload_too_large",
    ),
    (
        "over-limit-batch",
        lambda: {"data": multipart(*[bytes(MAX_UPLOAD // 3)] * 4), "content_type": "multipart/form-data"},
        413,
        "payload_too_large",
    ),
]


@pytest.mark.parametrize(
    "make_request, status, code", [row[1:] for row in BAD_INPUTS], ids=[row[0] for row in BAD_INPUTS]
)
def test_bad_inputs_get_the_right_json_error(client, make_request, status, code):
    assert_error(client.post("/predict", **make_request()), status, code)


def test_a_bad_file_in_a_batch_gets_its_own_error_and_the_others_their_answers(client):
    photos = [make_photo(seed=seed) for seed in range(3)]
    sent = [photos[0], b"junk" * 10, photos[1], b"", truncated_jpeg(), photos[2]]
    response = client.post("/predict", data=multipart(*sent), content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    items = response.get_json()["predictions"]
    assert len(items) == len(sent)
    for index, photo in zip((0, 2, 5), photos, strict=True):
        assert_prediction(items[index])
        assert items[index]["probabilities"] == post_file(client, photo).get_json()["probabilities"]
    assert [items[i]["error"]["code"] for i in (1, 3, 4)] == ["not_image", "empty", "corrupt"]
    for i in (1, 3, 4):
        assert set(items[i]) == {"error"} and set(items[i]["error"]) == {"code", "message"}
        assert items[i]["error"]["message"]


def test_a_bad_item_in_a_json_batch_gets_its_own_error(client):
    images = [base64.b64encode(make_photo()).decode(), "not base64!", 12, base64.b64encode(b"text").decode()]
    response = client.post("/predict?explain=1", json={"images": images})
    assert response.status_code == 200
    items = response.get_json()["predictions"]
    assert_prediction(items[0])
    decoded_png(items[0]["heatmap_png_base64"])
    assert [item["error"]["code"] for item in items[1:]] == ["bad_base64", "bad_base64", "not_image"]


@pytest.mark.parametrize(
    "make_request, status, code",
    [
        (lambda: {"data": multipart(b"junk", b"more junk"), "content_type": "multipart/form-data"}, 415, "not_image"),
        (lambda: {"data": multipart(b"", truncated_jpeg()), "content_type": "multipart/form-data"}, 400, "empty"),
        (lambda: {"json": {"images": ["@@", "!!"]}}, 400, "bad_base64"),
    ],
    ids=["all-not-images", "empty-then-corrupt", "all-bad-base64"],
)
def test_a_batch_none_of_whose_files_can_be_read_is_refused(client, make_request, status, code):
    error = assert_error(client.post("/predict", **make_request()), status, code)
    assert error["message"].startswith("none of the 2 images could be read; image 1:")


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/predict?explian=1"),
        ("post", "/predict?explain=1&x=2"),
        ("get", "/health?verbose=1"),
        ("get", "/ready?x"),
        ("get", "/model?format=yaml"),
        ("get", "/metrics?x=1"),
        ("get", "/openapi.json?v=3"),
    ],
)
def test_unknown_query_parameters_answer_400(client, method, path):
    kwargs = {"data": make_photo(), "content_type": "image/jpeg"} if method == "post" else {}
    error = assert_error(getattr(client, method)(path, **kwargs), 400, "unknown_parameter")
    assert "unknown query parameter" in error["message"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from(["image/jpeg", "application/octet-stream", "text/plain", ""]),
)
def test_arbitrary_bodies_never_cause_a_server_error(client, body, content_type):
    response = client.post("/predict", data=body, content_type=content_type or None)
    assert response.status_code in (200, 400, 413, 415, 422)


@pytest.mark.parametrize("corrupt_at", [10, 40, 100, 300])
def test_damaged_images_never_cause_a_server_error(client, corrupt_at):
    data = bytearray(make_photo((80, 60), "PNG"))
    data[corrupt_at : corrupt_at + 8] = b"\xff" * 8
    assert client.post("/predict", data=bytes(data), content_type="image/png").status_code in (200, 415, 422)


def test_uploads_are_not_written_to_disk(client, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr("werkzeug.formparser.SpooledTemporaryFile", refuse)
    big = make_photo((1200, 900), "BMP")
    assert len(big) > 500 * 1024  # Werkzeug spools parts above 500 KiB by default
    assert post_file(client, big, name="big.png").status_code == 200


# --- 404 and 405 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("get", "/predict", 405, "method_not_allowed"),
        ("delete", "/health", 405, "method_not_allowed"),
        ("post", "/model", 405, "method_not_allowed"),
        ("get", "/no-such-page", 404, "not_found"),
        ("get", "/predict/extra", 404, "not_found"),
    ],
)
def test_unknown_paths_and_methods_answer_json(client, method, path, status, code):
    assert_error(getattr(client, method)(path), status, code)


def test_a_browser_gets_an_html_404(client):
    response = client.get("/no-such-page", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert b"There is nothing at this address" in response.data


def test_api_paths_answer_json_even_to_a_browser(client):
    response = client.get("/predict", headers={"Accept": "text/html"})
    assert_error(response, 405, "method_not_allowed")


# --- the no-JavaScript form --------------------------------------------------------


def page_verdict(html: str) -> tuple[str, str]:
    """The label and the verdict in words that a rendered page shows."""
    tag = html.split('id="result-label" class="label" data-label="', 1)[1]
    label, rest = tag.split('">', 1)
    return label, rest.split("<", 1)[0]


def test_form_post_renders_the_result(client):
    response = post_file(client, make_photo((200, 150)), name="kitty.jpg", url="/", explain="1")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    label, words = page_verdict(html)
    assert label in CLASSES
    assert words == {"Cat": "Cat", "Dog": "Dog", "Other": "Neither a cat nor a dog"}[label]
    assert 'id="heatmap" alt=' in html and 'src="data:image/png;base64,' in html
    assert 'src="data:image/jpeg;base64,' in html
    assert "kitty.jpg" in html
    assert html.count("<progress") == 3


def test_the_page_shows_the_note_only_when_the_answer_is_not_the_most_probable_class(app, client, monkeypatch):
    predictor = app.extensions["catdog.model"].predictor
    photo = make_photo(seed=5)
    html = post_file(client, photo, url="/").get_data(as_text=True)
    assert '<p id="result-note" class="note" hidden>' in html and "is likelier" not in html
    bias = [0.0, 0.0, 0.0]
    bias[CLASSES.index(page_verdict(html)[0])] = -50.0
    monkeypatch.setattr(predictor, "decision_bias", tuple(bias))
    html = post_file(client, photo, url="/").get_data(as_text=True)
    note = html.split('<p id="result-note" class="note">', 1)[1].split("</p>", 1)[0]
    assert "is likelier" in note and "but the service answers" in note


def test_form_post_without_explain_has_no_heatmap(client):
    html = post_file(client, make_photo(), url="/").get_data(as_text=True)
    assert "data:image/png" not in html
    assert page_verdict(html)[0] in CLASSES


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"certainly not a picture", 415, "The file is not an image we can read."),
        (b"", 400, "The file is empty."),
        (png_declaring(100_000, 100_000), 422, "more pixels than the limit"),
    ],
    ids=["not-image", "empty", "bomb"],
)
def test_form_post_shows_errors_in_words(client, data, status, words):
    response = post_file(client, data, url="/")
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert words in response.get_data(as_text=True)


def test_form_post_without_a_file(client):
    response = client.post("/", data={"file": (io.BytesIO(b""), "")}, content_type="multipart/form-data")
    assert response.status_code == 400
    assert b"No file was chosen" in response.data


def test_form_post_over_the_limit(client):
    response = post_file(client, bytes(MAX_UPLOAD + 1), url="/")
    assert response.status_code == 413
    assert b"larger than the limit of 10 MiB" in response.data


XSS = '<script>alert("x")</script><img src=x onerror=alert(1)>.jpg'


def test_file_names_are_escaped_on_the_page(client):
    html = post_file(client, make_photo(), name=XSS, url="/").get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(" in html


def test_file_names_are_never_echoed_by_errors(client):
    for url in ("/", "/predict"):
        body = post_file(client, b"junk bytes", name=XSS, url=url).get_data(as_text=True)
        assert "<script>" not in body and "onerror" not in body


def test_without_a_model_no_path_or_library_error_is_shown(modelless_client, tmp_path, caplog):
    # The path and the HDF5 library's text go to the log only.
    secrets = [str(tmp_path), "model.h5", "Unable to", "signature"]
    answers = [modelless_client.get("/ready"), modelless_client.get("/"), post_file(modelless_client, make_photo())]
    for response in answers:
        text = response.get_data(as_text=True)
        assert not [secret for secret in secrets if secret in text], text
        assert "model file is" in text or "model file was" in text
    assert any(str(tmp_path) in record.getMessage() for record in caplog.get_records("setup"))


# --- true causes and caching -----------------------------------------------------


def raw_multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "xYzBoundary") -> bytes:
    """A multipart body from (field name, content, file name or None for a text field)."""
    chunks = []
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def post_multipart(client, body: bytes, url: str = "/predict", boundary: str = "xYzBoundary"):
    return client.post(url, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def test_too_many_form_parts_are_named_as_such(client):
    body = raw_multipart([("file", make_photo(), "a.jpg")] + [(f"f{i}", b"x", None) for i in range(1200)])
    assert len(body) < MAX_UPLOAD
    error = assert_error(post_multipart(client, body), 413, "too_many_parts")
    assert "1,000 parts" in error["message"] and "MiB" not in error["message"]


def test_a_form_is_refused_at_its_file_part_one_over_the_batch_limit(client):
    # 17 files, then a tail that is not multipart at all: parsing stops before it.
    body = raw_multipart([("file", b"x", f"{i}.jpg") for i in range(17)])
    body = body[: body.rindex(b"--xYzBoundary--")] + b"--xYzBoundary\r\nnot a part header" * 1000
    error = assert_error(post_multipart(client, body), 400, "too_many_files")
    assert "at most 16 images" in error["message"]


def test_a_json_batch_over_the_limit_is_refused_before_any_item_is_decoded(client, monkeypatch):
    from catdog.web import uploads

    decoded = []
    monkeypatch.setattr(uploads, "_decode_base64", lambda value: decoded.append(value) or b"")
    # 2 MB of zeros in the list (the review's body was 14 MB): refused at the 17th.
    body = b'{"images": [' + b"0," * 1_000_000 + b"0]}"
    error = assert_error(client.post("/predict", data=body, content_type="application/json"), 400, "too_many_files")
    assert "at most 16 images" in error["message"] and decoded == []
    # Real images, one over the limit.
    images = [base64.b64encode(make_photo()).decode()] * 17
    assert_error(client.post("/predict", json={"images": images}), 400, "too_many_files")
    assert decoded == []


def test_json_nested_deeper_than_any_upload_needs_is_refused(client):
    body = b'{"image": "x", "explain": ' + b"[" * 40 + b"]" * 40 + b"}"
    assert_error(client.post("/predict", data=body, content_type="application/json"), 400, "bad_json")


def test_a_huge_text_field_is_named_as_such(client):
    body = raw_multipart([("file", make_photo(), "a.jpg"), ("note", b"n" * 600_000, None)])
    error = assert_error(post_multipart(client, body), 413, "field_too_large")
    assert "text field" in error["message"] and "10 MiB" not in error["message"]


@pytest.mark.parametrize("cut", [0.5, 0.9, 0.999])
def test_a_cut_off_multipart_body_is_named_as_such(client, cut):
    body = raw_multipart([("file", make_photo(), "a.jpg")])
    error = assert_error(post_multipart(client, body[: int(len(body) * cut)]), 400, "bad_multipart")
    assert "cut off" in error["message"] and "no file was chosen" not in error["message"]


def test_the_page_names_a_cut_off_form_too(client):
    body = raw_multipart([("file", make_photo(), "a.jpg")])
    response = post_multipart(client, body[: len(body) // 2], url="/")
    assert response.status_code == 400 and b"cut off" in response.data


@pytest.mark.parametrize("url", ["/predict", "/"])
def test_answers_to_posts_are_not_stored_by_caches(client, url):
    for response in (post_file(client, make_photo(), url=url), post_file(client, b"junk", url=url)):
        assert response.headers["Cache-Control"] == "no-store"
    assert "no-store" not in client.get("/").headers.get("Cache-Control", "")


def test_a_scan_bomb_is_refused_as_too_complex(client):
    from benchmarks.hostile import progressive_bomb

    error = assert_error(post_file(client, progressive_bomb(400, 1200, 800)), 422, "too_complex")
    assert "scans" in error["message"]


def test_a_request_declaring_too_many_pixels_together_is_refused(client):
    big = png_declaring(8000, 5000)  # each alone within serving.max_pixels (40 million)
    response = client.post("/predict", data=multipart(big, big, big), content_type="multipart/form-data")
    error = assert_error(response, 422, "too_large")
    assert "120,000,000 pixels together" in error["message"] and "100,000,000" in error["message"]


def test_photos_below_the_minimum_side_are_refused_with_the_minimum(client):
    """serving.min_side comes from the measured accuracy-against-size curve (model card, "Small photos")."""
    from catdog.config import load_config

    minimum = load_config(environ={}).serving.min_side
    assert minimum == 32
    small = client.post("/predict", data=make_photo((minimum - 1, 200)), content_type="image/jpeg")
    error = assert_error(small, 422, "too_small")
    assert f"at least {minimum} pixels" in error["message"] and f"{minimum - 1}x200" in error["message"]
    fine = client.post("/predict", data=make_photo((minimum, minimum)), content_type="image/jpeg")
    assert fine.status_code == 200
    assert_prediction(fine.get_json())


def test_a_model_whose_twin_does_not_match_says_so_on_the_serve_only_install(three_class_model_path, monkeypatch):
    # The serving-only install has no Keras: the model can only be served through a LiteRT twin made from it.
    from app import create_app
    from helpers import CLASSES_OVERRIDE

    monkeypatch.setitem(sys.modules, "keras", None)
    overrides = {"model.path": str(three_class_model_path), **CLASSES_OVERRIDE}
    app = create_app({"TESTING": True, "CATDOG_OVERRIDES": overrides})
    error = assert_error(app.test_client().get("/ready"), 503, "model_unavailable")
    assert "twin" in error["message"] and "catdog ship" in error["message"]
    assert "missing or unreadable" not in error["message"]
