"""The serving-only install: ``pip install .`` (no ``-e``) in a fresh venv runs from any folder, through LiteRT.

Slow (it builds the package and installs packages from the index, a few
minutes with a warm pip cache): ``pytest -m slow tests/test_serve_install.py``;
``.ci/run`` runs it. The venv is built once for the module; every command then
runs with the checkout off the path (no ``PYTHONPATH``), so what answers is the
installed package.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from catdog.export import litert
from catdog.serving.inference import Predictor
from catdog.web.server import free_port
from helpers import build_tiny_model, make_photo, save_model

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["Cat", "Dog", "Other"]
# What a copy of the checkout to build from leaves out: git's files, venvs, data, models, builds and caches.
NOT_SOURCES = (".git", ".venv*", "data", "artifacts", "runs", "logs", "model", "build", "*.egg-info", "__pycache__")
NOT_SOURCES += (".pytest_cache", ".ruff_cache", ".hypothesis")

pytestmark = pytest.mark.slow


def fetch(url: str, data: bytes | None = None, content_type: str | None = None) -> bytes:
    headers = {"Content-Type": content_type} if content_type else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
        return response.read()


def request_json(url: str, data: bytes | None = None, content_type: str | None = None) -> dict:
    return json.loads(fetch(url, data, content_type))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with requirements-serve.txt and the checkout installed as a wheel would be (no ``-e``)."""
    venv = tmp_path_factory.mktemp("install") / "serve-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-serve.txt")], check=True)
    # pip builds in the folder it installs (build/, src/catdog.egg-info): a copy of the sources keeps that out of
    # the checkout, whose src/ the other tests import, and keeps a stale build/ of the checkout out of the wheel.
    source = venv.parent / "checkout"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    # The package's declared (serving) dependencies must be met by the pins above and must not bring TensorFlow.
    subprocess.run([python, "-m", "pip", "install", "-q", str(source)], check=True)
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True)
    installed = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert not installed & {"tensorflow", "tensorflow-cpu", "keras", "h5py"}
    return venv


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny three-class model.h5 with its LiteRT twin, which the serving venv runs without TensorFlow."""
    model = save_model(build_tiny_model(classes=3), tmp_path_factory.mktemp("tiny") / "model" / "model.h5")
    litert.write(litert.convert(model, litert.generated_images(200, 32), source="generated"), model)
    return model


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working folder with no config.yaml, app.py or src/ in it."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    return folder


def venv_env(venv: Path, **extra: str) -> dict[str, str]:
    """The environment of a command run in ``venv``: no checkout on the path, none of the developer's CATDOG_*."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CATDOG")}
    env.pop("PYTHONPATH", None)
    return {**env, "PATH": f"{venv / 'bin'}:{env['PATH']}", **extra}


def test_the_installed_cli_runs_from_any_folder(venv: Path, tiny_model: Path, elsewhere: Path):
    def catdog(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(venv / "bin" / "catdog"), *args],
            cwd=elsewhere,
            env=venv_env(venv, **extra),
            capture_output=True,
            text=True,
            timeout=120,
        )

    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import catdog; print(catdog.__file__)"],
        cwd=elsewhere,
        env=venv_env(venv),
        capture_output=True,
        text=True,
        check=True,
    )
    package = Path(where.stdout.strip())
    assert "site-packages" in package.parts and ROOT not in package.parents  # a copy, not a link to the checkout

    shown = catdog("--help")
    assert shown.returncode == 0, shown.stderr
    assert "predict" in shown.stdout and "ship" in shown.stdout
    # Outside a checkout there is no config to fall back on: the error says where it looked and what to do.
    photo = elsewhere / "photo.jpg"
    photo.write_bytes(make_photo(seed=5))
    lost = catdog("predict", str(photo))
    assert lost.returncode == 1
    assert "CATDOG_CONFIG" in lost.stderr and "not run from a source checkout" in lost.stderr
    found = catdog("predict", "--model", str(tiny_model), str(photo), CATDOG_CONFIG=str(ROOT / "config.yaml"))
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith(f"{photo}: ")


@contextlib.contextmanager
def gunicorn(venv: Path, args: list[str], cwd: Path, log: Path, **extra: str) -> Iterator[str]:
    """Serve with the venv's gunicorn from ``cwd`` until the block ends; yields the base URL once ready."""
    port = free_port()
    env = venv_env(venv, CATDOG_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2", **extra)
    with log.open("w") as out:
        server = subprocess.Popen(
            [str(venv / "bin" / "gunicorn"), *args], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, log.read_text()
                with contextlib.suppress(OSError):
                    if request_json(f"{url}/ready")["ready"]:
                        break
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield url
        finally:
            server.terminate()
            server.wait(30)
    assert "Traceback" not in log.read_text()


def assert_serves(url: str, model: Path) -> None:
    """``/predict`` answers as the model does in TensorFlow, with a heatmap; the upload page and its script load."""
    photo = make_photo(seed=11)
    answer = request_json(f"{url}/predict", photo, "image/jpeg")
    explained = request_json(f"{url}/predict?explain=1", photo, "image/jpeg")
    info = request_json(f"{url}/model")
    probabilities = Predictor(model, CLASSES, runtime="tensorflow").predict_bytes([photo])[0].probabilities
    assert answer["label"] == max(probabilities, key=probabilities.get)
    np.testing.assert_allclose(
        [answer["probabilities"][name] for name in CLASSES], [probabilities[name] for name in CLASSES], atol=1e-4
    )
    assert base64.b64decode(explained["heatmap_png_base64"]).startswith(b"\x89PNG")
    assert info["runtime"] == "litert" and info["classes"] == CLASSES
    assert b'id="upload-form"' in fetch(f"{url}/")
    assert fetch(f"{url}/static/app.js") == (ROOT / "static" / "app.js").read_bytes()


def test_the_installed_app_serves_from_another_folder(venv: Path, tiny_model: Path, elsewhere: Path, tmp_path: Path):
    """gunicorn.conf.py's own app, catdog.web.app:create_app(), needs no app.py: the config names model and pages."""
    settings = {
        "CATDOG_CONFIG": str(ROOT / "config.yaml"),
        "CATDOG__MODEL__PATH": str(tiny_model),
        "CATDOG__DATA__CLASSES": json.dumps(CLASSES),
    }
    conf = ["-c", str(ROOT / "gunicorn.conf.py")]
    with gunicorn(venv, conf, elsewhere, tmp_path / "gunicorn.log", **settings) as url:
        assert_serves(url, tiny_model)


def test_gunicorn_app_app_from_the_checkout_serves_the_installed_package(venv: Path, tiny_model: Path, tmp_path: Path):
    """The README's command: in the checkout, gunicorn reads ./gunicorn.conf.py and serves app.py's app."""
    settings = {"CATDOG__MODEL__PATH": str(tiny_model), "CATDOG__DATA__CLASSES": json.dumps(CLASSES)}
    with gunicorn(venv, ["app:app"], ROOT, tmp_path / "gunicorn.log", **settings) as url:
        assert_serves(url, tiny_model)
