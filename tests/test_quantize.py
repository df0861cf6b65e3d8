"""Tests for catdog.export.quantize and int8 serving: the int8 twin, its check, and the choice of precision."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from catdog.config import load_config
from catdog.errors import ConfigError, ModelError
from catdog.export import litert, quantize
from catdog.paths import litert_paths
from catdog.serving.calibration import expected_calibration_error
from catdog.serving.inference import Predictor
from helpers import build_tiny_model, run_litert_worker, save_model

CLASSES = ("Cat", "Dog", "Other")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_lopsided_model():
    """A model whose ``features`` hold one channel a thousand times larger than the rest, which its head ignores.

    One int8 scale for all of ``features`` then rounds every useful channel
    to nothing: the quantized twin answers the same for every image.
    """
    import keras
    from keras import layers

    keras.utils.set_random_seed(5)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    useful = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    constant = layers.Conv2D(1, 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(1000.0))(x)
    features = layers.Concatenate(name="features")([useful, constant])
    head = layers.Dense(3, activation="softmax", name="predictions")
    model = keras.Model(inputs, head(layers.GlobalAveragePooling2D()(features)), name="lopsided")
    kernel, bias = head.get_weights()
    kernel[-1] = 0.0
    head.set_weights([4 * kernel, bias])
    return model


def with_twins(path: Path) -> Path:
    """Write both twins of ``path`` beside it; the int8 one only if it passes (its record either way)."""
    litert.write(litert.convert(path, litert.generated_images(200, 32), source="generated"), path)
    litert.write(quantize.quantize(path), path)
    return path


@pytest.fixture(scope="module")
def twin_path(tmp_path_factory) -> Path:
    """A tiny three-class ``model.h5`` with its float and int8 twins beside it."""
    return with_twins(save_model(build_tiny_model(classes=3), tmp_path_factory.mktemp("int8") / "model.h5"))


@pytest.fixture(scope="module")
def refused_path(tmp_path_factory) -> Path:
    """The lopsided model with its float twin and the record of its refused int8 twin."""
    return with_twins(save_model(build_lopsided_model(), tmp_path_factory.mktemp("refused") / "model.h5"))


def record_of(path: Path, precision: str = "int8") -> dict:
    return json.loads(litert_paths(path, precision)[1].read_text())


def test_the_int8_twin_is_written_with_what_its_check_measured(twin_path):
    tflite, _ = litert_paths(twin_path, "int8")
    record = record_of(twin_path)
    assert record["precision"] == "int8" and record["source_sha256"] == sha256(twin_path)
    assert record["sha256"] == sha256(tflite)
    assert tflite.stat().st_size < litert_paths(twin_path)[0].stat().st_size  # 8-bit weights
    check = record["check"]
    assert check["passed"] is True and check["failures"] == []
    assert check["images"] == quantize.GENERATED_CHECK_IMAGES and check["source"].startswith("generated")
    assert check["agreement"] >= 0.995 and check["disagreements"] == round((1 - check["agreement"]) * 400)
    assert 0 < check["max_abs_difference"] < 0.05  # int8 is close, not exact
    assert check["cam_correlation_mean"] >= 0.98 and check["cam_correlation_min"] <= check["cam_correlation_mean"]
    assert check["accuracy_float"] is None and check["ece_int8"] is None  # generated images have no true labels
    assert check["limits"] == {
        "agreement": 0.995,
        "accuracy_drop": 0.002,
        "ece_increase": 0.005,
        "cam_correlation": 0.98,
    }
    assert record["quantization"]["representative"].startswith("generated")


def test_the_int8_twin_takes_pixels_as_they_are(twin_path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(litert_paths(twin_path, "int8")[0]))
    (image,) = interpreter.get_input_details()
    assert image["dtype"] == np.uint8 and image["quantization"] == (1.0, 0)
    assert {detail["dtype"] for detail in interpreter.get_output_details()} == {np.int8}


def test_both_precisions_give_the_labels_the_check_recorded(twin_path):
    int8 = Predictor(twin_path, CLASSES)
    float_ = Predictor(twin_path, CLASSES, precision="float")
    assert (int8.runtime, int8.precision, int8.precision_note) == ("litert", "int8", None)
    assert (float_.runtime, float_.precision) == ("litert", "float")
    images = litert.generated_images(quantize.GENERATED_CHECK_IMAGES, 32, seed=2)  # the check's images
    same = (int8.predict_arrays(images).argmax(1) == float_.predict_arrays(images).argmax(1)).mean()
    assert same == record_of(twin_path)["check"]["agreement"]
    probabilities = int8.predict_arrays(images[:20])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=0.02)
    np.testing.assert_allclose(probabilities, float_.predict_arrays(images[:20]), atol=0.05)
    for image in images[:5]:
        heat, reference = int8.gradcam(image), float_.gradcam(image)
        assert heat.shape == reference.shape and np.corrcoef(heat.ravel(), reference.ravel())[0, 1] > 0.9


def test_a_twin_whose_quantized_outputs_disagree_is_refused(refused_path, caplog):
    tflite, _ = litert_paths(refused_path, "int8")
    record = record_of(refused_path)
    assert not tflite.exists() and "sha256" not in record
    check = record["check"]
    assert check["passed"] is False and check["agreement"] < 0.9
    assert check["failures"][0].startswith("labels agree with the float model on ")
    caplog.set_level("INFO", logger="catdog.serving.runtime")
    predictor = Predictor(refused_path, CLASSES)
    assert (predictor.runtime, predictor.precision) == ("litert", "float")
    assert "int8 twin was refused by its check: labels agree" in predictor.precision_note
    assert "refused by its check" in caplog.text
    with pytest.raises(ModelError, match="refused by its check"):
        Predictor(refused_path, CLASSES, precision="int8")


def test_the_app_says_which_precision_answers(twin_path, refused_path):
    from app import create_app

    for path, precision in ((twin_path, "int8"), (refused_path, "float")):
        app = create_app({"TESTING": True, "CATDOG_OVERRIDES": {"model.path": str(path), "data.classes": CLASSES}})
        info = app.test_client().get("/model").get_json()
        assert info["precision"] == precision and info["version"].endswith(f"+{info['sha256_short']}.{precision}")
        assert (info["precision_note"] is None) == (precision == "int8")
    assert "refused by its check" in info["precision_note"]


def test_a_twin_of_another_model_is_not_served_in_int8(twin_path, tmp_path):
    for path in (twin_path, *litert_paths(twin_path), *litert_paths(twin_path, "int8")):
        shutil.copyfile(path, tmp_path / path.name)
    served = save_model(build_tiny_model(classes=3, name="othernet"), tmp_path / "model.h5")
    assert Predictor(served, CLASSES).runtime == "tensorflow"
    with pytest.raises(ModelError, match="model.int8.tflite was converted from another model.h5"):
        Predictor(served, CLASSES, precision="int8")


def test_an_int8_litert_worker_imports_neither_tensorflow_nor_keras(twin_path, tmp_path):
    answer = run_litert_worker(twin_path, list(CLASSES), tmp_path)
    assert answer["heavy"] == []
    assert (answer["info"]["runtime"], answer["info"]["precision"]) == ("litert", "int8")
    assert answer["status"] == 200 and answer["body"]["label"] in CLASSES
    assert answer["body"]["model"]["version"].endswith(".int8") and answer["body"]["heatmap_png_base64"]


@pytest.mark.parametrize("value", ["auto", "float", "int8"])
def test_serving_precision_takes_three_values(config_file, value):
    assert load_config(config_file, [f"serving.precision={value}"], environ={}).serving.precision == value


@pytest.mark.parametrize("value", ["fp16", "INT8", "8"])
def test_serving_precision_is_validated_with_a_clear_error(config_file, value):
    with pytest.raises(ConfigError, match=r"serving\.precision: input should be 'auto', 'float' or 'int8', got "):
        load_config(config_file, [f"serving.precision={value}"], environ={})


def test_an_unknown_precision_is_refused(twin_path):
    with pytest.raises(ValueError, match="precision must be one of auto, float, int8"):
        Predictor(twin_path, CLASSES, precision="fp16")
    with pytest.raises(ValueError, match="int8 needs the LiteRT runtime"):
        Predictor(twin_path, CLASSES, runtime="tensorflow", precision="int8")


# --- the check's figures ------------------------------------------------------------


def check_inputs(count: int = 1000, seed: int = 0):
    """Float probabilities 90% sure and right exactly 90% of the time (so calibrated), and varied heatmaps."""
    labels = np.arange(count) % 3
    predicted = np.where(np.arange(count) % 10 == 9, (labels + 1) % 3, labels)
    probabilities = np.full((count, 3), 0.05)
    probabilities[np.arange(count), predicted] = 0.9
    maps = np.random.default_rng(seed).random((count, 4, 4))
    return probabilities, maps, labels


def test_compare_passes_a_twin_equal_to_the_float_model():
    probabilities, maps, labels = check_inputs()
    result = quantize.compare(probabilities, probabilities, maps, maps, labels, temperature=0.8)
    assert result["passed"] and result["failures"] == []
    assert result["agreement"] == 1.0 and result["max_abs_difference"] == 0.0
    assert result["accuracy_float"] == result["accuracy_int8"] == pytest.approx(0.9)
    assert result["ece_float"] == result["ece_int8"]
    assert result["cam_correlation_mean"] == pytest.approx(1.0)


def test_compare_refuses_each_limit_missed():
    probabilities, maps, labels = check_inputs()
    flipped = probabilities.copy()
    # Ten right answers made wrong: 99.0% agreement, accuracy one point lower, so 90% sure is now 1 point off.
    right = np.flatnonzero(probabilities.argmax(1) == labels)[:10]
    flipped[right] = np.roll(flipped[right], 1, axis=1)
    result = quantize.compare(probabilities, flipped, maps, maps, labels)
    assert result["agreement"] == 0.99 and result["disagreements"] == 10
    assert result["accuracy_float"] - result["accuracy_int8"] == pytest.approx(0.01)
    assert result["ece_int8"] - result["ece_float"] == pytest.approx(0.01, abs=1e-6)
    assert [failure.split(" ")[0] for failure in result["failures"]] == ["labels", "accuracy", "calibration"]
    assert "99.00% of 1000 images, below 99.5%" in result["failures"][0]

    # Same labels, heatmaps unlike the float ones, and confidence pushed to 1: calibration error grows.
    sure = np.where(probabilities == probabilities.max(1, keepdims=True), 0.998, 0.001)
    result = quantize.compare(probabilities, sure, maps, 1 - maps, labels)
    assert result["agreement"] == 1.0
    assert result["ece_int8"] == pytest.approx(expected_calibration_error(sure, labels), abs=1e-6)
    assert [failure.split(" ")[0] for failure in result["failures"]] == ["heatmaps", "calibration"]
    assert not result["passed"]


def test_compare_without_labels_judges_agreement_and_heatmaps_only():
    probabilities, maps, _ = check_inputs()
    result = quantize.compare(probabilities, probabilities, maps, np.zeros_like(maps), None)
    assert result["accuracy_float"] is None and result["ece_float"] is None
    assert result["cam_correlation_mean"] == 0.0  # a blank map explains nothing the float one shows
    assert result["failures"] == ["heatmaps correlate 0.000 with the float ones on average, below 0.98"]


def test_compare_judges_the_answers_of_the_decision_rule():
    probabilities, maps, labels = check_inputs()
    twin = probabilities.copy()
    # Ten rows both precisions call Other, but only the float one clearly enough for a bias held against Other.
    rows = np.arange(10) * 3 + 2
    probabilities[rows], twin[rows] = [0.30, 0.05, 0.65], [0.40, 0.05, 0.55]
    assert quantize.compare(probabilities, twin, maps, maps, labels)["disagreements"] == 0
    decision_bias = (0.0, 0.0, -0.4)
    result = quantize.compare(probabilities, twin, maps, maps, labels, decision_bias=decision_bias)
    assert result["disagreements"] == 10 and result["accuracy_int8"] < result["accuracy_float"]
    assert result["ece_int8"] == pytest.approx(
        expected_calibration_error(twin, labels, decision_bias=decision_bias), abs=1e-6
    )
