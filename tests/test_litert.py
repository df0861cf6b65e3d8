"""Tests for catdog.export.litert and catdog ship: the LiteRT twin of model.h5 and its conversion check."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from catdog.errors import ModelError
from catdog.export import litert
from catdog.export.ship import main as ship_main
from catdog.export.ship import ship
from catdog.paths import litert_paths, served_model, shipped_metrics
from catdog.serving.preprocess import load_image
from helpers import build_tiny_model, save_model


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_unpooled_head_model():
    """Like the tiny model, but a sigmoid sits between ``features`` and the pooling: CAM would be wrong."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(7)
    inputs = keras.Input(shape=(32, 32, 3), name="image")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.Activation("linear", name="features")(x)
    x = layers.Activation("sigmoid")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="unpooled")


@pytest.fixture(scope="module")
def conversion(tmp_path_factory) -> tuple[Path, litert.Conversion]:
    path = save_model(build_tiny_model(classes=3), tmp_path_factory.mktemp("convert") / "model.h5")
    return path, litert.convert(path, litert.generated_images(200, 32), source="generated")


def test_conversion_records_its_source_and_check(conversion):
    path, result = conversion
    record = result.record
    assert record["source"] == "model.h5" and record["source_sha256"] == sha256(path)
    assert record["architecture"] == "tinynet" and record["input_size"] == 32 and record["num_classes"] == 3
    assert record["outputs"] == {"probabilities": [None, 3], "features": [None, 16, 16, 16]}
    assert record["check"]["images"] == 200 and record["check"]["source"] == "generated"
    assert 0 <= record["check"]["max_abs_difference"] <= 1e-4
    assert np.asarray(record["head"]["kernel"]).shape == (16, 3)
    assert len(record["head"]["bias"]) == 3
    assert result.tflite[4:8] == b"TFL3"  # the flatbuffer's file identifier


def test_write_puts_the_twin_and_its_record_beside_the_model(conversion, tmp_path):
    path, result = conversion
    target = tmp_path / "model.h5"
    shutil.copyfile(path, target)
    tflite = litert.write(result, target)
    assert (tflite, tflite.with_name("model.tflite.json")) == litert_paths(target)
    record = json.loads(tflite.with_name("model.tflite.json").read_text())
    assert record["sha256"] == sha256(tflite) and record["precision"] == "float"
    assert record["source_sha256"] == sha256(target)
    np.testing.assert_array_equal(np.asarray(record["head"]["kernel"], np.float32), result.record["head"]["kernel"])
    assert set(result.files("model.h5")) == {"model.tflite", "model.tflite.json"}


def test_conversion_needs_enough_check_images(conversion):
    path, _ = conversion
    with pytest.raises(litert.ConversionError, match="at least 200 images, got 199"):
        litert.convert(path, litert.generated_images(199, 32))


def test_conversion_refuses_a_head_that_cam_cannot_explain(tmp_path):
    path = save_model(build_unpooled_head_model(), tmp_path / "model.h5")
    with pytest.raises(litert.ConversionError, match="not global average pooling then Dense"):
        litert.convert(path, litert.generated_images(200, 32))


def test_check_images_take_the_validation_split_evenly(tmp_path, photo_bytes):
    dataset = tmp_path / "PetImages"
    files = []
    for index in range(30):
        relative = f"{'Cat' if index < 15 else 'Dog'}/{index}.jpg"
        (dataset / relative).parent.mkdir(parents=True, exist_ok=True)
        (dataset / relative).write_bytes(photo_bytes(seed=index))
        files.append(relative)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "manifest.json").write_text(
        json.dumps(
            {"dataset_dir": str(dataset), "classes": ["Cat", "Dog"], "files": {"Cat": files[:15], "Dog": files[15:]}}
        )
    )
    split = {"train": [], "validation": files, "test": []}
    (artifacts / "split.json").write_text(
        json.dumps({"classes": ["Cat", "Dog"], "files": split, "labels": {k: [0] * len(v) for k, v in split.items()}})
    )

    images, source = litert.check_images(artifacts, 32, count=10)
    assert source == "validation split (10 images)"
    chosen = [files[i] for i in np.linspace(0, 29, 10).round().astype(int)]
    assert chosen[0].startswith("Cat") and chosen[-1].startswith("Dog")
    np.testing.assert_array_equal(images, np.stack([load_image(dataset / f, 32) for f in chosen]))

    images, source = litert.check_images(artifacts, 32, count=40)
    assert images.shape == (40, 32, 32, 3) and source == "validation split (30) + generated (10)"


def test_check_images_without_artifacts_are_generated(tmp_path):
    images, source = litert.check_images(tmp_path / "none", 24, count=5)
    assert images.shape == (5, 24, 24, 3) and images.dtype == np.uint8
    assert source.startswith("generated")
    assert len({image.tobytes() for image in images}) == 5


# --- catdog ship ---------------------------------------------------------------


def trained(model_dir: Path, model, name: str = "tinynet") -> Path:
    path = save_model(model, model_dir / f"{name}.h5")
    (model_dir / f"{name}.metrics.json").write_text(json.dumps({"validation": {"accuracy": 0.9}}))
    return path


def test_ship_installs_the_model_and_its_checked_twins_as_one_release(settings):
    source = trained(Path(settings.model.dir), build_tiny_model(classes=3))
    target = ship(source, settings)
    assert target == Path(settings.model.path) and target.is_symlink()
    served = served_model(target)
    assert served.parent.parent == Path(settings.model.dir) / "releases" and sha256(served) == sha256(source)
    assert sha256(shipped_metrics(served)) == sha256(source.with_suffix(".metrics.json"))
    tflite, record_path = litert_paths(served)
    record = json.loads(record_path.read_text())
    assert record["source_sha256"] == sha256(served) and record["sha256"] == sha256(tflite)
    assert record["check"]["images"] >= 200 and record["check"]["max_abs_difference"] <= 1e-4
    assert record["check"]["source"].startswith("generated")  # the test config has no split
    int8, int8_record_path = litert_paths(served, "int8")
    int8_record = json.loads(int8_record_path.read_text())
    assert int8_record["check"]["passed"] and int8_record["sha256"] == sha256(int8)
    assert int8_record["source_sha256"] == sha256(served)


def test_ship_refuses_a_model_whose_twin_fails_the_check_and_installs_nothing(settings):
    source = trained(Path(settings.model.dir), build_unpooled_head_model(), "unpooled")
    with pytest.raises(litert.ConversionError):
        ship(source, settings)
    assert not Path(settings.model.path).exists() and not Path(settings.model.path).is_symlink()
    assert not (Path(settings.model.dir) / "releases").exists()


def test_ship_no_litert_installs_the_model_alone(settings, config_file, capsys):
    model_dir = Path(settings.model.dir)
    ship(trained(model_dir, build_tiny_model()), settings)
    first = served_model(settings.model.path).parent
    second = trained(model_dir, build_unpooled_head_model(), "unpooled")
    assert ship_main(["--config", str(config_file), str(second), "--no-litert"]) == 0
    served = served_model(settings.model.path)
    assert sha256(served) == sha256(second) and served.parent != first
    assert sorted(path.name for path in served.parent.iterdir()) == ["metrics.json", "model.h5"]


def test_generated_images_are_photo_like():
    images = litert.generated_images(20, 64, seed=3)
    assert images.shape == (20, 64, 64, 3)
    # Smooth: neighbouring pixels are close on average, unlike uniform noise.
    steps = np.abs(np.diff(images.astype(np.int16), axis=2)).mean()
    assert steps < 40
    assert Image.fromarray(images[0]).size == (64, 64)
    np.testing.assert_array_equal(images, litert.generated_images(20, 64, seed=3))
    assert ModelError in litert.ConversionError.__mro__
