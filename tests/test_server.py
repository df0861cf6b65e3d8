"""End-to-end: the app under a real gunicorn on 127.0.0.1, stopped with SIGTERM."""

from __future__ import annotations

import base64
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from catdog.config import PROJECT_ROOT
from helpers import make_photo

GUNICORN_VARIABLES = (
    "CATDOG_BIND",
    "HOST",
    "PORT",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
    "GUNICORN_TIMEOUT",
    "GUNICORN_GRACEFUL_TIMEOUT",
    "GUNICORN_CONTROL_SOCKET",
    "TF_CPP_MIN_LOG_LEVEL",
    "GUNICORN_MAX_REQUESTS",
    "GUNICORN_HEADER_TIMEOUT",
    "GUNICORN_BODY_TIMEOUT",
    "GUNICORN_MIN_BODY_RATE",
    "GUNICORN_RECYCLE_SPACING",
)


def gunicorn_settings(monkeypatch, **env) -> dict:
    """The settings gunicorn.conf.py produces under ``env``."""
    for name in GUNICORN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(PROJECT_ROOT / "gunicorn.conf.py"))


def test_gunicorn_defaults(monkeypatch):
    conf = gunicorn_settings(monkeypatch)
    assert conf["bind"] == ["127.0.0.1:8000"]
    assert (conf["workers"], conf["threads"], conf["worker_class"]) == (2, 4, "catdog.web.worker.BufferingWorker")
    assert (conf["timeout"], conf["graceful_timeout"]) == (60, 20)
    # Workers are recycled, at staggered times, so memory one request needed is given back.
    assert (conf["max_requests"], conf["max_requests_jitter"]) == (1000, 100)
    assert conf["preload_app"] is False
    assert conf["wsgi_app"] == "catdog.web.app:create_app()"  # no app.py needed: serves from any folder
    assert conf["control_socket_disable"] is True


# The gunicorn master imports the worker class: it answers with the API's error body, and without Flask.
WORKER_ANSWER = """
import json, sys
from catdog.web.error_body import error_body
from catdog.web.worker import error_answer
head, _, body = error_answer(408, "too slow").partition(b"\\r\\n\\r\\n")
same_body = json.loads(body) == error_body("request_timeout", "too slow")
print(head.split(b"\\r\\n")[0].decode(), same_body, "flask" in sys.modules)
"""


def test_the_worker_answers_the_apis_error_body_without_flask():
    result = subprocess.run(
        [sys.executable, "-c", WORKER_ANSWER], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["HTTP/1.1", "408", "Request", "Timeout", "True", "False"]


# Importing app.py must build nothing; reading ``app`` (as gunicorn does) builds the app once.
IMPORT_APP = """
import app
built_on_import = "app" in vars(app)
print(built_on_import, app.app is app.app, app.app.config["CATDOG_SETTINGS"].model.path)
"""


def test_importing_app_loads_no_model(tiny_model_path):
    env = {**os.environ, "CATDOG__MODEL__PATH": str(tiny_model_path), "CATDOG__DATA__CLASSES": "[Cat, Dog]"}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_APP], capture_output=True, text=True, cwd=PROJECT_ROOT, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", str(tiny_model_path)]


def test_gunicorn_settings_from_the_environment(monkeypatch):
    conf = gunicorn_settings(
        monkeypatch,
        HOST="0.0.0.0",
        PORT="9000",
        WEB_CONCURRENCY="3",
        GUNICORN_THREADS="8",
        GUNICORN_TIMEOUT="120",
        GUNICORN_GRACEFUL_TIMEOUT="5",
    )
    assert conf["bind"] == ["0.0.0.0:9000"]
    assert (conf["workers"], conf["threads"], conf["timeout"], conf["graceful_timeout"]) == (3, 8, 120, 5)
    assert gunicorn_settings(monkeypatch, CATDOG_BIND="unix:/tmp/catdog.sock", PORT="1")["bind"] == [
        "unix:/tmp/catdog.sock"
    ]


@pytest.mark.parametrize(
    "name, value",
    [
        ("WEB_CONCURRENCY", "many"),
        ("PORT", "80a"),
        ("GUNICORN_THREADS", "0"),
        ("GUNICORN_HEADER_TIMEOUT", "soon"),
        ("GUNICORN_MAX_REQUESTS", "-1"),
        ("GUNICORN_RECYCLE_SPACING", "0"),
    ],
)
def test_gunicorn_refuses_bad_numbers(monkeypatch, name, value):
    with pytest.raises(SystemExit, match=name):
        gunicorn_settings(monkeypatch, **{name: value})


@pytest.fixture(scope="module")
def server(live_server):
    return live_server(workers=1, threads=2)


def check_prediction(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["label"] in ("Cat", "Dog")
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["model"]["architecture"] == "tinynet"
    return body


def test_health_and_ready(server):
    assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
    ready = requests.get(f"{server.url}/ready", timeout=10)
    assert ready.status_code == 200 and ready.json()["ready"] is True


def test_multipart(server):
    files = {"file": ("cat.jpg", make_photo(), "image/jpeg")}
    check_prediction(requests.post(f"{server.url}/predict", files=files, timeout=30))


def test_multipart_batch_with_heatmaps(server):
    files = [("file", (f"{i}.jpg", make_photo(seed=i), "image/jpeg")) for i in range(3)]
    body = requests.post(f"{server.url}/predict", params={"explain": "1"}, files=files, timeout=30).json()
    assert len(body["predictions"]) == 3
    assert all(base64.b64decode(item["heatmap_png_base64"]).startswith(b"\x89PNG") for item in body["predictions"])


def test_raw_body(server):
    response = requests.post(
        f"{server.url}/predict", data=make_photo(), headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    check_prediction(response)


def test_json(server):
    payload = {"image": "data:image/jpeg;base64," + base64.b64encode(make_photo()).decode()}
    check_prediction(requests.post(f"{server.url}/predict", json=payload, timeout=30))


def test_a_bad_upload_does_not_hurt_the_worker(server):
    bad = requests.post(f"{server.url}/predict", data=b"\x00" * 100, headers={"Content-Type": "image/png"}, timeout=30)
    assert bad.status_code == 415
    assert bad.json()["error"]["code"] == "not_image"
    check_prediction(requests.post(f"{server.url}/predict", files={"file": ("a.jpg", make_photo())}, timeout=30))


def test_the_page_is_served(server):
    page = requests.get(f"{server.url}/", timeout=10)
    assert page.status_code == 200 and 'id="upload-form"' in page.text
    assert requests.get(f"{server.url}/static/app.js", timeout=10).status_code == 200


def test_sigterm_stops_the_server_cleanly(server):
    # Runs last in this module: it stops the module's server.
    started = time.monotonic()
    assert server.stop(timeout=30) == 0
    assert time.monotonic() - started < 15
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.url}/health", timeout=5)
    server.log.flush()
    log = Path(server.log.name).read_text()
    assert "Worker exiting" in log and "Shutting down: Master" in log
    assert "Traceback" not in log


def test_outside_a_source_checkout_the_server_needs_the_folder_of_app_py(monkeypatch, tmp_path):
    from catdog.web import server

    monkeypatch.setattr(server, "source_checkout", lambda: None)
    with (tmp_path / "log").open("w") as log, pytest.raises(server.ServerError, match="pass root"):
        server.GunicornServer(tmp_path / "model.h5", log)
    with (tmp_path / "log").open("w") as log:
        assert server.GunicornServer(tmp_path / "model.h5", log, root=tmp_path).root == tmp_path
