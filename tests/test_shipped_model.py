"""The models committed in model/: they load, answer, and carry their own honest metrics."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from catdog.config import PROJECT_ROOT, load_config

MODEL_DIR = PROJECT_ROOT / "model"
# The bars from the models issue, on each model's own held-out test part.
BARS = {"model.h5": 0.93, "inception.h5": 0.90, "resnet.h5": 0.90}


def _metrics_for(name: str) -> dict:
    path = MODEL_DIR / ("metrics.json" if name == "model.h5" else name.replace(".h5", ".metrics.json"))
    return json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(BARS))
def test_metrics_belong_to_the_file_and_meet_the_bar(name: str):
    model_file = MODEL_DIR / name
    metrics = _metrics_for(name)
    assert metrics["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert metrics["test"]["images"] >= 2000
    assert metrics["test"]["accuracy"] >= BARS[name]
    # The test part was never used to choose the model: early stopping and the
    # checkpoint watched the validation part.
    assert metrics["best_epoch"] <= metrics["epochs_run"]


def test_shipped_model_gives_a_probability_for_a_generated_photo(photo_bytes):
    from catdog.inference import Predictor

    settings = load_config(environ={})
    predictor = Predictor(Path(settings.model.path), settings.data.classes)
    (prediction,) = predictor.predict_bytes([photo_bytes(size=(500, 375))])
    assert prediction.label in settings.data.classes
    assert 0.0 <= prediction.confidence <= 1.0
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert predictor.input_size == _metrics_for("model.h5")["image_size"]


def test_shipped_model_is_stable_under_a_horizontal_flip(photo_bytes):
    """Training used random flips, so a mirrored picture should get nearly the same answer."""
    from catdog.inference import Predictor
    from catdog.preprocess import load_image

    settings = load_config(environ={})
    predictor = Predictor(Path(settings.model.path), settings.data.classes)
    image = load_image(photo_bytes(size=(400, 300), seed=3), predictor.input_size)
    probs = predictor.predict_arrays(np.stack([image, image[:, ::-1]]))
    assert abs(float(probs[0, 1] - probs[1, 1])) < 0.35
