"""Tests for catdog.serving.runtime through the Predictor: LiteRT vs TensorFlow, CAM, calibration, decision bias."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from catdog.errors import ModelError
from catdog.export import litert
from catdog.paths import litert_paths
from catdog.serving.calibration import apply_temperature
from catdog.serving.inference import Predictor
from catdog.serving.preprocess import load_image
from catdog.serving.runtime import class_activation_map
from helpers import answers_from_threads, build_tiny_model, make_photo, run_litert_worker, save_model

CLASSES = {2: ("Cat", "Dog"), 3: ("Cat", "Dog", "Other")}


def model_with_twin(folder: Path, classes: int) -> Path:
    """A tiny ``model.h5`` with its checked LiteRT twin beside it."""
    path = save_model(build_tiny_model(classes=classes), folder / "model.h5")
    litert.write(litert.convert(path, litert.generated_images(200, 32), source="generated"), path)
    return path


@pytest.fixture(scope="module", params=[2, 3], ids=["2-classes", "3-classes"])
def twin_path(request, tmp_path_factory) -> Path:
    return model_with_twin(tmp_path_factory.mktemp(f"twin{request.param}"), request.param)


@pytest.fixture(scope="module")
def pair(twin_path) -> tuple[Predictor, Predictor]:
    """The same model served by LiteRT and by TensorFlow."""
    classes = classes_of(twin_path)
    return Predictor(twin_path, classes), Predictor(twin_path, classes, runtime="tensorflow")


def photos(count: int) -> np.ndarray:
    """``count`` photo-like pictures as the tiny model's input."""
    return np.stack([load_image(make_photo(seed=seed), 32) for seed in range(count)])


def classes_of(model_path: Path) -> tuple[str, ...]:
    """The class names fitting the twin beside ``model_path`` (2 or 3 outputs)."""
    return CLASSES[json.loads(litert_paths(model_path)[1].read_text())["num_classes"]]


def test_a_matching_twin_is_served_by_litert(pair):
    lite, tf = pair
    assert (lite.runtime, tf.runtime) == ("litert", "tensorflow")
    assert lite.architecture == tf.architecture == "tinynet"
    assert lite.input_size == tf.input_size == 32


def test_both_runtimes_give_the_same_probabilities(pair):
    lite, tf = pair
    batch = np.concatenate([photos(6), litert.generated_images(10, 32, seed=5)])
    np.testing.assert_allclose(lite.predict_arrays(batch), tf.predict_arrays(batch), atol=1e-5)
    np.testing.assert_allclose(lite.predict_arrays(batch[:1]), tf.predict_arrays(batch[:1]), atol=1e-5)
    assert [r.label for r in lite.predict_bytes([make_photo(seed=1), make_photo(seed=2)])] == [
        r.label for r in tf.predict_bytes([make_photo(seed=1), make_photo(seed=2)])
    ]


def test_cam_matches_tensorflow_gradcam_for_every_class(pair):
    lite, tf = pair
    lit_up = 0
    for array in np.concatenate([photos(4), litert.generated_images(4, 32, seed=9)]):
        for class_index in (None, *range(len(lite.classes))):
            expected = tf.gradcam(array, class_index)
            got = lite.gradcam(array, class_index)
            assert got.shape == expected.shape == (16, 16) and got.dtype == np.float32
            np.testing.assert_allclose(got, expected, atol=1e-4)
            lit_up += expected.max() == pytest.approx(1.0)
    assert lit_up >= 8  # the comparison is not between two blank maps


def test_class_activation_map_of_two_classes_weighs_the_difference_of_the_columns():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(3, 4, 5)).astype(np.float32)
    kernel = rng.normal(size=(5, 2)).astype(np.float32)
    expected = np.maximum(features @ (kernel[:, 1] - kernel[:, 0]), 0)
    np.testing.assert_allclose(
        class_activation_map(features, kernel, np.zeros(2), 1), expected / expected.max(), rtol=1e-5
    )
    # Without a class, the one with the highest logit: here the bias decides.
    np.testing.assert_array_equal(
        class_activation_map(features, kernel, np.array([0.0, 100.0])),
        class_activation_map(features, kernel, np.zeros(2), 1),
    )
    assert not class_activation_map(np.zeros((2, 2, 5)), kernel, np.zeros(2), 0).any()


def test_litert_predictions_are_thread_safe(pair):
    lite, _ = pair
    arrays = np.concatenate([photos(4), litert.generated_images(4, 32, seed=2)])
    expected = lite.predict_arrays(arrays)
    answers = answers_from_threads(lambda i: lite.predict_arrays(arrays[i : i + 1])[0], len(arrays), 20)
    for index, runs in answers.items():
        for probabilities in runs:
            np.testing.assert_allclose(probabilities, expected[index], atol=1e-6)


def test_info_names_the_runtime(pair, twin_path):
    lite, tf = pair
    lite_info, tf_info = lite.info(), tf.info()
    assert (lite_info["runtime"], tf_info["runtime"]) == ("litert", "tensorflow")
    assert lite_info["runtime_version"] == "2.3.0"
    assert lite_info["tensorflow_version"] is None and lite_info["keras_version"] is None
    assert tf_info["tensorflow_version"] and tf_info["keras_version"]
    assert lite_info["parameters"] == tf_info["parameters"] > 0
    for key in ("architecture", "input_size", "classes", "sha256", "file", "calibration_temperature"):
        assert lite_info[key] == tf_info[key]


# --- choosing the runtime --------------------------------------------------------


@pytest.fixture
def served_dir(tmp_path, twin_path) -> Path:
    """A copy of the model with its twin, which a test may spoil."""
    for path in (twin_path, *litert_paths(twin_path)):
        shutil.copyfile(path, tmp_path / path.name)
    return tmp_path / "model.h5"


def test_a_twin_of_another_model_is_not_served(served_dir, caplog):
    classes = CLASSES[3]
    save_model(build_tiny_model(classes=3, name="othernet"), served_dir)  # retrained; the twin is stale
    caplog.set_level("INFO", logger="catdog.serving.runtime")
    predictor = Predictor(served_dir, classes)
    assert predictor.runtime == "tensorflow" and predictor.architecture == "othernet"
    assert "converted from another model.h5" in caplog.text
    with pytest.raises(ModelError, match="converted from another model.h5"):
        Predictor(served_dir, classes, runtime="litert")


def test_a_damaged_twin_is_not_served(served_dir, caplog):
    tflite, _ = litert_paths(served_dir)
    tflite.write_bytes(tflite.read_bytes()[:-100])
    classes = classes_of(served_dir)
    assert Predictor(served_dir, classes).runtime == "tensorflow"
    with pytest.raises(ModelError, match="damaged or replaced"):
        Predictor(served_dir, classes, runtime="litert")


def test_a_missing_twin_means_tensorflow(tiny_model_path):
    assert Predictor(tiny_model_path, CLASSES[2]).runtime == "tensorflow"
    with pytest.raises(ModelError, match="no model.tflite"):
        Predictor(tiny_model_path, CLASSES[2], runtime="litert")


def test_a_twin_with_other_classes_is_refused(served_dir):
    wrong = ("A", "B", "C")[: 5 - len(classes_of(served_dir))]  # 3 names for a 2-class model, 2 for a 3-class one
    with pytest.raises(ModelError, match=f"must output {len(wrong)} probabilities"):
        Predictor(served_dir, wrong, runtime="litert")


def test_an_unknown_runtime_is_refused(tiny_model_path):
    with pytest.raises(ValueError, match="runtime must be one of auto, litert, tensorflow"):
        Predictor(tiny_model_path, CLASSES[2], runtime="onnx")


def test_a_litert_worker_imports_neither_tensorflow_nor_keras(twin_path, tmp_path):
    classes = list(classes_of(twin_path))
    answer = run_litert_worker(twin_path, classes, tmp_path)
    assert answer["heavy"] == []
    assert answer["runtime"] == "litert"
    assert answer["status"] == 200 and answer["body"]["label"] in classes
    assert answer["body"]["heatmap_png_base64"]


# --- calibration temperature ---------------------------------------------------------


def test_apply_temperature_is_temperature_scaling_of_the_logits():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 3.0]])
    softmax = lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)  # noqa: E731
    probabilities = softmax(logits).astype(np.float32)
    for temperature in (0.5, 1.7, 4.0):
        np.testing.assert_allclose(
            apply_temperature(probabilities, temperature), softmax(logits / temperature), atol=1e-6
        )
    np.testing.assert_array_equal(apply_temperature(probabilities, 1.0), probabilities)
    # A zero probability (underflow) is clipped, not turned into NaN.
    calibrated = apply_temperature(np.array([[1.0, 0.0]], np.float32), 2.0)
    assert np.isfinite(calibrated).all() and calibrated[0, 1] == pytest.approx(1e-6, rel=1e-3)


def with_metrics(served_dir: Path, metrics) -> Path:
    served_dir.with_name("metrics.json").write_text(json.dumps(metrics))
    return served_dir


@pytest.mark.parametrize("runtime", ["litert", "tensorflow"])
def test_both_runtimes_apply_the_calibration_temperature(served_dir, runtime):
    classes = classes_of(served_dir)
    batch = np.concatenate([photos(3), litert.generated_images(5, 32, seed=1)])
    raw = Predictor(served_dir, classes, runtime=runtime).predict_arrays(batch)
    with_metrics(served_dir, {"calibration": {"temperature": 2.5, "nll_before": 0.4}})
    predictor = Predictor(served_dir, classes, runtime=runtime)
    assert predictor.temperature == 2.5 and predictor.info()["calibration_temperature"] == 2.5
    calibrated = predictor.predict_arrays(batch)
    np.testing.assert_array_equal(predictor.predict_arrays(batch, calibrated=False), raw)
    expected = np.exp(np.log(raw) / 2.5)
    np.testing.assert_allclose(calibrated, expected / expected.sum(axis=1, keepdims=True), atol=1e-6)
    assert (calibrated.argmax(axis=1) == raw.argmax(axis=1)).all()
    assert calibrated.max() < raw.max()  # a temperature above 1 softens
    result = predictor.predict_bytes([make_photo(seed=3)])[0]
    assert result.confidence == pytest.approx(max(result.probabilities.values()))
    assert result.confidence == pytest.approx(float(predictor.predict_arrays(photos(4)[3:4]).max()), abs=1e-6)


@pytest.mark.parametrize(
    "metrics, temperature",
    [
        ({"test_accuracy": 0.5}, 1.0),
        ({"calibration": {}}, 1.0),
        ({"calibration": {"temperature": 3}}, 3.0),
        ({"model_sha256": "0" * 64, "calibration": {"temperature": 2.0}}, 1.0),
    ],
    ids=["no-calibration", "no-temperature", "integer", "metrics-of-another-model"],
)
def test_temperature_defaults_to_one(served_dir, metrics, temperature):
    with_metrics(served_dir, metrics)
    for runtime in ("litert", "tensorflow"):
        assert Predictor(served_dir, classes_of(served_dir), runtime=runtime).temperature == temperature


@pytest.mark.parametrize("value", [0, -1.5, "2", None, True, float("inf")], ids=str)
def test_a_bad_temperature_is_a_model_error(served_dir, value):
    with_metrics(served_dir, {"calibration": {"temperature": value}})
    classes = classes_of(served_dir)
    with pytest.raises(ModelError, match="calibration.temperature must be a positive number"):
        Predictor(served_dir, classes)


@pytest.mark.parametrize("runtime", ["litert", "tensorflow"])
def test_both_runtimes_apply_the_class_bias(served_dir, runtime):
    """softmax(log p / T + b): a bias on the first class raises its probability in every row."""
    classes = classes_of(served_dir)
    batch = np.concatenate([photos(3), litert.generated_images(5, 32, seed=2)])
    raw = Predictor(served_dir, classes, runtime=runtime).predict_arrays(batch)
    bias = [0.7] + [0.0] * (len(classes) - 1)
    with_metrics(served_dir, {"calibration": {"temperature": 1.5, "class_bias": bias}})
    predictor = Predictor(served_dir, classes, runtime=runtime)
    assert predictor.class_bias == tuple(bias) and predictor.info()["calibration_class_bias"] == bias
    served = predictor.predict_arrays(batch)
    logits = np.log(raw) / 1.5 + np.array(bias)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(served, expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    assert (served[:, 0] > apply_temperature(raw, 1.5)[:, 0]).all()


BAD_BIASES = [
    ("class_bias", [1.0]),
    ("class_bias", [0.0, "x", 0.0]),
    ("class_bias", [float("nan"), 0.0, 0.0]),
    ("class_bias", "0.5"),
    ("decision_bias", [1.0]),
    ("decision_bias", [0.0, "x", 0.0]),
    ("decision_bias", [float("inf"), 0.0, 0.0]),
    ("decision_bias", {"Other": -1}),
]


@pytest.mark.parametrize(("key", "bias"), BAD_BIASES, ids=str)
def test_a_bad_class_or_decision_bias_is_a_model_error(served_dir, key, bias):
    classes = classes_of(served_dir)
    if isinstance(bias, list) and len(bias) == 3 and len(classes) != 3:
        bias = bias[: len(classes)]
    with_metrics(served_dir, {"calibration": {"temperature": 1.0, key: bias}})
    with pytest.raises(ModelError, match=f"calibration.{key} must be"):
        Predictor(served_dir, classes)


def test_both_runtimes_answer_by_the_decision_bias_and_leave_the_probabilities_alone(served_dir):
    """argmax(log q + d) chooses the answer; q, and the confidence q[answer], are as without d."""
    classes = classes_of(served_dir)
    data = [make_photo(seed=seed) for seed in range(4)]
    with_metrics(served_dir, {"calibration": {"temperature": 1.5}})
    plain = Predictor(served_dir, classes).predict_bytes(data)
    top = classes.index(plain[0].label)
    decision_bias = [0.0] * len(classes)
    decision_bias[top] = -50.0  # never answer the first photo's class: its answer must flip
    with_metrics(served_dir, {"calibration": {"temperature": 1.5, "decision_bias": decision_bias}})
    answers = {}
    for runtime in ("litert", "tensorflow"):
        predictor = Predictor(served_dir, classes, runtime=runtime)
        assert predictor.info()["calibration_decision_bias"] == decision_bias
        explained = []
        explain = predictor._runtime.explain

        def recording(array, index, explained=explained, explain=explain):
            explained.append(index)
            return explain(array, index)

        predictor._runtime.explain = recording
        results = predictor.predict_bytes(data, explain=True)
        answers[runtime] = [r.label for r in results]
        for before, after in zip(plain, results, strict=True):
            assert after.probabilities == pytest.approx(before.probabilities, abs=1e-5)
            assert after.label != classes[top]
            assert after.confidence == pytest.approx(after.probabilities[after.label])
        flipped = results[0]
        assert flipped.confidence < flipped.probabilities[classes[top]]
        assert flipped.note is not None and flipped.note.startswith(f"{classes[top]} is likelier")
        # The heatmap explains the class answered, not the most probable one.
        assert explained == [classes.index(r.label) for r in results]
        assert predictor.gradcam(load_image(data[0], 32)) == pytest.approx(
            predictor.gradcam(load_image(data[0], 32), classes.index(flipped.label))
        )
    assert answers["litert"] == answers["tensorflow"]


@pytest.mark.parametrize(
    "metrics",
    [{"calibration": {"temperature": 1.2}}, {"calibration": {"temperature": 1.2, "decision_bias": None}}, {}],
    ids=["absent", "null", "uncalibrated"],
)
def test_a_missing_decision_bias_is_zeros_and_answers_the_most_probable_class(served_dir, metrics):
    classes = classes_of(served_dir)
    with_metrics(served_dir, metrics)
    predictor = Predictor(served_dir, classes)
    assert predictor.decision_bias == (0.0,) * len(classes)
    assert predictor.info()["calibration_decision_bias"] == [0.0] * len(classes)
    for result in predictor.predict_bytes([make_photo(seed=seed) for seed in range(3)]):
        assert result.confidence == max(result.probabilities.values()) and result.note is None


def test_the_app_gives_litert_the_configured_threads(twin_path, settings, monkeypatch: pytest.MonkeyPatch):
    from ai_edge_litert import interpreter as litert_interpreter

    threads = []
    original = litert_interpreter.Interpreter

    def recording(*args, **kwargs):
        threads.append(kwargs.get("num_threads"))
        return original(*args, **kwargs)

    monkeypatch.setattr(litert_interpreter, "Interpreter", recording)
    configured = settings.model_copy(
        update={
            "serving": settings.serving.model_copy(update={"litert_threads": 3}),
            "data": settings.data.model_copy(update={"classes": classes_of(twin_path)}),
        }
    )
    predictor = Predictor.from_settings(configured, twin_path)
    assert predictor.runtime == "litert"
    assert threads == [3]
    assert settings.serving.litert_threads == 2  # config.yaml's choice (docs/serving.md, "LiteRT or TensorFlow")


def test_an_ensemble_is_served_like_one_model_and_averages_logits(tmp_path: Path):
    """Two members with 16x16 and 32x32 feature maps, through both runtimes and the LiteRT check."""
    from catdog.models.ensemble import build_ensemble
    from catdog.serving.runtime import check_contract
    from helpers import build_colour_model

    members = [build_tiny_model(classes=3), build_colour_model()]
    combined = build_ensemble(members)
    assert check_contract(combined, tmp_path / "model.h5", 3) == 32
    assert tuple(combined.get_layer("features").output.shape[1:]) == (32, 32, 16 + 3)
    batch = np.concatenate([photos(4), litert.generated_images(6, 32, seed=3)]).astype(np.float32)
    logits = np.mean([np.log(m.predict(batch, verbose=0)) for m in members], axis=0)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(combined.predict(batch, verbose=0), expected, atol=1e-5)

    path = save_model(combined, tmp_path / "model.h5")
    litert.write(litert.convert(path, litert.generated_images(200, 32), source="generated"), path)
    lite, tf = Predictor(path, CLASSES[3]), Predictor(path, CLASSES[3], runtime="tensorflow")
    assert (lite.runtime, lite.architecture) == ("litert", "ensemble")
    np.testing.assert_allclose(lite.predict_arrays(batch.astype(np.uint8)), expected, atol=1e-4)
    for array in photos(3):
        np.testing.assert_allclose(lite.gradcam(array), tf.gradcam(array), atol=1e-4)


def test_an_ensemble_needs_two_members_that_fit():
    from catdog.models.ensemble import build_ensemble

    with pytest.raises(ValueError, match="at least two"):
        build_ensemble([build_tiny_model(classes=3)])
    with pytest.raises(ValueError, match="share input and classes"):
        build_ensemble([build_tiny_model(classes=3), build_tiny_model(classes=2)])


def test_litert_runs_a_batch_one_image_at_a_time(pair, monkeypatch: pytest.MonkeyPatch):
    """The interpreter keeps memory for the largest batch it saw, so it never sees more than one image."""
    lite, tf = pair
    runtime = lite._runtime
    shapes = []
    original = runtime._interpreter.set_tensor

    def recording(index, value):
        shapes.append(value.shape)
        return original(index, value)

    monkeypatch.setattr(runtime._interpreter, "set_tensor", recording)
    batch = photos(5)
    np.testing.assert_allclose(lite.predict_arrays(batch), tf.predict_arrays(batch), atol=1e-5)
    assert shapes == [(1, 32, 32, 3)] * 5
    assert lite.predict_arrays(batch[:0]).shape == (0, len(lite.classes))
