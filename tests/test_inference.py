"""Tests for catdog.serving.inference: loading, the forward pass, Grad-CAM and the overlay."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from catdog.errors import InvalidImage, ModelError
from catdog.serving.inference import Prediction, Predictor, overlay_heatmap, read_metrics_file
from catdog.serving.preprocess import ImageLimits, load_image
from catdog.training.results import read_metrics
from helpers import answers_from_threads, build_tiny_model, make_photo, save_model

CLASSES = ("Cat", "Dog")


@pytest.fixture(scope="module")
def predictor(tiny_model_path) -> Predictor:
    return Predictor(tiny_model_path, CLASSES, limits=ImageLimits(min_side=8))


def test_importing_does_not_import_tensorflow():
    code = "import sys, catdog.serving.inference; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- loading -----------------------------------------------------------------


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="was not found"):
        Predictor(tmp_path / "nothing.h5", CLASSES)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not an HDF5"),
        (b"this is not a model\n" * 10, "not an HDF5"),
        (b"PK\x03\x04 a zip, like a .keras file", "not an HDF5"),
    ],
    ids=["empty", "text", "zip"],
)
def test_files_that_are_not_hdf5_are_refused(tmp_path, content, message):
    path = tmp_path / "model.h5"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        Predictor(path, CLASSES)


def test_truncated_file_is_refused(tmp_path, tiny_model_path):
    data = tiny_model_path.read_bytes()
    path = tmp_path / "model.h5"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cannot load model file"):
        Predictor(path, CLASSES)


@pytest.mark.parametrize(
    "options, classes, message",
    [
        ({"channels": 1}, CLASSES, r"\(None, S, S, 3\) input"),
        ({"classes": 3}, CLASSES, r"must output \(None, 2\)"),
        ({}, ("Cat", "Dog", "Bird"), r"must output \(None, 3\)"),
        ({"features_name": "last_conv"}, CLASSES, "no layer named 'features'"),
    ],
    ids=["grayscale-input", "three-outputs", "three-classes-configured", "no-features-layer"],
)
def test_models_breaking_the_contract_are_refused(tmp_path, options, classes, message):
    path = save_model(build_tiny_model(**options), tmp_path / "model.h5")
    with pytest.raises(ModelError, match=message):
        Predictor(path, classes)


# --- forward pass ------------------------------------------------------------


def test_predict_arrays_returns_probabilities(predictor):
    batch = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    probabilities = predictor.predict_arrays(batch)
    assert probabilities.shape == (5, 2)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "batch",
    [np.zeros((32, 32, 3), np.uint8), np.zeros((1, 31, 32, 3), np.uint8), np.zeros((1, 32, 32, 3), np.float32)],
    ids=["no-batch-axis", "wrong-size", "float"],
)
def test_predict_arrays_checks_its_input(predictor, batch):
    with pytest.raises(ValueError, match="uint8 of shape"):
        predictor.predict_arrays(batch)


@pytest.mark.parametrize(
    "fmt, mode, size",
    [("JPEG", "RGB", (500, 375)), ("PNG", "RGBA", (60, 40)), ("GIF", "P", (50, 50)), ("PNG", "L", (40, 64))],
    ids=["large-jpeg", "png-rgba", "gif", "png-gray"],
)
def test_decode_uses_the_shared_preprocessing(predictor, fmt, mode, size):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(make_photo(size, "PNG"))).convert(mode).save(buffer, format=fmt)
    data = buffer.getvalue()
    _, array = predictor.decode(data)
    np.testing.assert_array_equal(array, load_image(data, 32, limits=ImageLimits(min_side=8)))


def test_predict_bytes_matches_predict_arrays(predictor):
    images = [make_photo(seed=seed) for seed in range(3)]
    results = predictor.predict_bytes(images)
    expected = predictor.predict_arrays(np.stack([load_image(data, 32) for data in images]))
    assert [r.label for r in results] == [CLASSES[i] for i in expected.argmax(axis=1)]
    for result, probs in zip(results, expected, strict=True):
        assert isinstance(result, Prediction)
        assert list(result.probabilities) == list(CLASSES)
        np.testing.assert_allclose(list(result.probabilities.values()), probs, rtol=1e-5)
        assert result.confidence == pytest.approx(probs.max(), rel=1e-5)
        assert result.heatmap_png is None and result.photo is None


def test_a_batch_gives_the_same_answers_as_single_images(predictor):
    images = [make_photo(seed=seed) for seed in range(4)]
    batch = predictor.predict_bytes(images)
    singles = [predictor.predict_bytes([data])[0] for data in images]
    for one, other in zip(batch, singles, strict=True):
        assert one.label == other.label
        assert one.confidence == pytest.approx(other.confidence, abs=1e-5)


def test_predict_bytes_names_the_bad_image_of_a_batch(predictor):
    with pytest.raises(InvalidImage, match="^image 2: ") as caught:
        predictor.predict_bytes([make_photo(), b"not an image at all"])
    assert caught.value.reason == "not_image"


def test_predict_bytes_refuses_a_bomb_before_decoding(predictor, huge_png):
    with pytest.raises(InvalidImage) as caught:
        predictor.predict_bytes([huge_png])
    assert caught.value.reason == "too_large"


def test_concurrent_predictions_agree_with_sequential_ones(predictor):
    images = [make_photo(seed=seed) for seed in range(8)]
    expected = [predictor.predict_bytes([data])[0].probabilities for data in images]
    answers = answers_from_threads(lambda i: predictor.predict_bytes([images[i]])[0].probabilities, len(images), 3)
    for index, runs in answers.items():
        for probabilities in runs:
            assert probabilities == pytest.approx(expected[index], abs=1e-6)


# --- Grad-CAM and overlay --------------------------------------------------


def test_gradcam_is_a_normalised_map_at_the_features_resolution(predictor):
    _, array = predictor.decode(make_photo())
    heatmap = predictor.gradcam(array)
    assert heatmap.shape == (16, 16)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() == pytest.approx(1.0)


def test_gradcam_of_each_class_differs(predictor):
    _, array = predictor.decode(make_photo())
    assert not np.allclose(predictor.gradcam(array, 0), predictor.gradcam(array, 1))


@pytest.mark.parametrize("class_index", [-1, 2])
def test_gradcam_checks_the_class_index(predictor, class_index):
    with pytest.raises(ValueError, match="class_index"):
        predictor.gradcam(np.zeros((32, 32, 3), np.uint8), class_index)


def test_explain_adds_an_overlay_the_size_of_the_shown_photo(predictor):
    result = predictor.predict_bytes([make_photo((500, 375))], explain=True)[0]
    overlay = Image.open(io.BytesIO(result.heatmap_png))
    assert overlay.format == "PNG"
    assert overlay.size == result.photo.size
    assert max(overlay.size) <= 384


def test_overlay_of_a_cold_map_leaves_the_photo_unchanged():
    photo = Image.open(io.BytesIO(make_photo())).convert("RGB")
    cold = Image.open(io.BytesIO(overlay_heatmap(photo, np.zeros((4, 4), np.float32))))
    hot = Image.open(io.BytesIO(overlay_heatmap(photo, np.ones((4, 4), np.float32))))
    np.testing.assert_array_equal(np.asarray(cold), np.asarray(photo))
    assert not np.array_equal(np.asarray(hot), np.asarray(photo))


# --- info --------------------------------------------------------------------


def test_info_describes_the_model(predictor, tiny_model_path):
    info = predictor.info()
    digest = hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()
    assert info["architecture"] == "tinynet" == predictor.architecture
    assert info["input_size"] == [32, 32, 3]
    assert info["classes"] == list(CLASSES)
    assert info["parameters"] == 8 * (3 * 3 * 3 + 1) + 16 * (3 * 3 * 8 + 1) + 2 * (16 + 1)
    assert info["sha256"] == digest
    assert info["sha256_short"] == digest[:12] == predictor.short_hash
    assert info["metrics"] == {"test_accuracy": 0.5, "architecture": "tinynet"}
    assert info["tensorflow_version"] and info["keras_version"]


@pytest.mark.parametrize("metrics", [None, "{broken json", "[1, 2]"], ids=["absent", "broken", "not-a-mapping"])
def test_info_without_usable_metrics(tmp_path, tiny_model_path, metrics):
    path = tmp_path / "model.h5"
    path.write_bytes(tiny_model_path.read_bytes())
    if metrics is not None:
        (tmp_path / "metrics.json").write_text(metrics)
    assert Predictor(path, CLASSES).info()["metrics"] is None


@pytest.mark.parametrize("content", [None, "{broken json", "[1, 2]"], ids=["absent", "broken", "not-a-mapping"])
def test_the_one_metrics_reader_refuses_what_is_not_a_metrics_object(tmp_path, content):
    """Training and ship read metrics through it: a list or broken file is a clear ModelError, not a crash later."""
    path = tmp_path / "resnet.metrics.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelError, match="cannot read the metrics"):
        read_metrics_file(path)
    with pytest.raises(ModelError, match="cannot read the metrics"):
        read_metrics(tmp_path / "resnet.h5")


def test_the_one_metrics_reader_reads_an_object(tmp_path):
    (tmp_path / "resnet.metrics.json").write_text('{"validation": {"accuracy": 0.9}}')
    assert read_metrics(tmp_path / "resnet.h5") == {"validation": {"accuracy": 0.9}}
