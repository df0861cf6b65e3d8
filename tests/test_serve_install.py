"""The serving-only install: requirements-serve.txt in a fresh venv answers /predict through LiteRT.

Slow (it installs packages from the index, about a minute with a warm pip
cache): ``pytest -m slow tests/test_serve_install.py``; ``.ci/run`` runs it.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from catdog.export import litert
from catdog.serving.inference import Predictor
from catdog.web.server import free_port
from helpers import build_tiny_model, make_photo, save_model

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["Cat", "Dog", "Other"]


def request_json(url: str, data: bytes | None = None, content_type: str | None = None) -> dict:
    headers = {"Content-Type": content_type} if content_type else {}
    with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_the_serving_install_answers_predict_without_tensorflow(tmp_path):
    venv = tmp_path / "serve-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-r", str(ROOT / "requirements-serve.txt")], check=True, cwd=ROOT
    )
    # The package itself from the source tree, as the README installs it: its declared (serving) dependencies
    # must be met by the pins above and must not bring TensorFlow.
    subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT)], check=True, cwd=ROOT)
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"], check=True, capture_output=True, text=True
    ).stdout
    installed = {item["name"].lower() for item in json.loads(listed)}
    assert not installed & {"tensorflow", "tensorflow-cpu", "keras", "h5py"}

    model = save_model(build_tiny_model(classes=3), tmp_path / "model" / "model.h5")
    litert.write(litert.convert(model, litert.generated_images(200, 32), source="generated"), model)
    expected = Predictor(model, CLASSES, runtime="tensorflow")

    port = free_port()
    env = {
        **os.environ,
        "CATDOG__MODEL__PATH": str(model),
        "CATDOG__DATA__CLASSES": json.dumps(CLASSES),
        "CATDOG_BIND": f"127.0.0.1:{port}",
        "WEB_CONCURRENCY": "2",
        "PATH": f"{venv / 'bin'}:{os.environ['PATH']}",
    }
    env.pop("PYTHONPATH", None)
    log = (tmp_path / "gunicorn.log").open("w")
    server = subprocess.Popen(
        [str(venv / "bin" / "gunicorn"), "-c", "gunicorn.conf.py", "app:app"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "gunicorn.log").read_text()
            try:
                if request_json(f"{url}/ready")["ready"]:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "gunicorn.log").read_text()
            time.sleep(0.2)
        photo = make_photo(seed=11)
        answer = request_json(f"{url}/predict", photo, "image/jpeg")
        explained = request_json(f"{url}/predict?explain=1", photo, "image/jpeg")
        info = request_json(f"{url}/model")
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    probabilities = expected.predict_bytes([photo])[0].probabilities
    assert answer["label"] == max(probabilities, key=probabilities.get)
    np.testing.assert_allclose(
        [answer["probabilities"][name] for name in CLASSES], [probabilities[name] for name in CLASSES], atol=1e-4
    )
    assert base64.b64decode(explained["heatmap_png_base64"]).startswith(b"\x89PNG")
    assert info["runtime"] == "litert" and info["classes"] == CLASSES
