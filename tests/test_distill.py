"""Distillation: the blended targets' maths, and a student trained on a teacher's answers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from catdog import paths
from catdog.config import load_config
from catdog.errors import ConfigError
from catdog.training import distill, train

TEACHER = np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
LABELS = [0, 1, 2, 1]


def test_pets_blend_the_teacher_in_and_other_keeps_its_label():
    targets = distill.soft_targets(LABELS, TEACHER, 3, other=2, weight=0.5)
    np.testing.assert_allclose(targets[0], [0.8, 0.15, 0.05])
    np.testing.assert_allclose(targets[1], [0.1, 0.85, 0.05])
    # A photo of neither is never taught that it might be a pet, however sure the teacher is.
    np.testing.assert_array_equal(targets[2], [0.0, 0.0, 1.0])
    # A dog the teacher leans to call Other: its target carries that doubt.
    np.testing.assert_allclose(targets[3], [0.15, 0.65, 0.2])
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(("weight", "expected_dog"), [(0.0, [0.0, 1.0, 0.0]), (1.0, [0.3, 0.3, 0.4])])
def test_the_weight_runs_from_the_label_alone_to_the_teacher_alone(weight: float, expected_dog):
    targets = distill.soft_targets(LABELS, TEACHER, 3, other=2, weight=weight)
    np.testing.assert_allclose(targets[3], expected_dog, atol=1e-6)


def test_without_an_other_class_every_photo_is_blended():
    teacher = TEACHER[:, :2] / TEACHER[:, :2].sum(axis=1, keepdims=True)
    targets = distill.soft_targets([0, 1, 0, 1], teacher, 2, other=None, weight=1.0)
    np.testing.assert_allclose(targets, teacher, rtol=1e-6)


def test_a_teacher_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="shape"):
        distill.soft_targets(LABELS, TEACHER[:3], 3, other=2, weight=0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        distill.soft_targets(LABELS, TEACHER, 3, other=2, weight=1.5)


def test_the_weight_is_checked_with_the_config(config_file: Path):
    with pytest.raises(ConfigError, match="distill_weight"):
        load_config(config_file, ["training.distill_weight=1.2"], environ={})


def test_a_student_learns_from_the_teachers_answers(tiny_run: Path, monkeypatch: pytest.MonkeyPatch):
    settings = load_config(tiny_run, ["training.epochs=1", "training.warmup_epochs=0"], environ={})
    teacher_file = Path(settings.model.dir) / "inception.h5"
    train.train(settings, output=teacher_file)

    fed = {}
    original = train.tf_dataset

    def recording(images, labels, *args, **kwargs):
        if args[2]:  # the training part
            fed["labels"], fed["targets"] = np.asarray(labels), args[-1] if len(args) > 7 else kwargs.get("targets")
        return original(images, labels, *args, **kwargs)

    monkeypatch.setattr(train, "tf_dataset", recording)
    student_file = teacher_file.with_name("student.h5")
    metrics = train.train(settings, output=student_file, distill_from=teacher_file)

    targets, labels = fed["targets"], fed["labels"]
    assert targets is not None and targets.shape == (len(labels), 3)
    other = labels == 2
    np.testing.assert_array_equal(targets[other], np.eye(3, dtype=np.float32)[labels[other]])
    # Each pet's target is 0.7 of the teacher's answer and 0.3 of its label: never one-hot, always summing to 1.
    pets = ~other
    assert np.all(targets[pets][np.arange(pets.sum()), labels[pets]] >= 0.3 - 1e-6)
    assert np.all(targets[pets].max(axis=1) < 1.0)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-5)
    assert metrics["distilled_from"]["weight"] == 0.7
    saved = json.loads(paths.trained_metrics(student_file).read_text())
    assert saved["distilled_from"]["sha256"] == metrics["distilled_from"]["sha256"]


@pytest.mark.parametrize("other", [False, True])
def test_distill_other_decides_whether_the_photos_of_neither_learn_the_teacher(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, other: bool
):
    """The real photos of neither blend the teacher in only with ``distill_other``; generated pictures never do."""
    from catdog.data.dataset import Split

    settings = load_config(config_file, [f"training.distill_other={str(other).lower()}"], environ={})
    files = ["Cat/1.jpg", "Dog/1.jpg", "Other/cars_1.jpg", "Other/lfw_2.jpg"]
    split = Split(("Cat", "Dog", "Other"), {"train": files}, {"train": [0, 1, 2, 2]})
    photos = np.zeros((len(files), 8, 8, 3), np.uint8)
    labels = np.array([0, 1, 2, 2, 2])  # the last one a generated picture, after the photos
    taught = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6], [0.1, 0.2, 0.7]], np.float32)
    monkeypatch.setattr(distill, "teacher_probabilities", lambda *args: taught)
    teacher_file = tmp_path / "teacher.h5"
    teacher_file.write_bytes(b"a teacher")  # only hashed for the record

    targets, record = train._distilled_targets(settings, split, photos, labels, teacher_file)

    label_rows = np.eye(3, dtype=np.float32)[labels]
    blended = 0.7 * taught + 0.3 * label_rows[:4]
    np.testing.assert_allclose(targets[:2], blended[:2], rtol=1e-6)  # pets: always blended
    np.testing.assert_allclose(targets[2:4], blended[2:4] if other else label_rows[2:4], rtol=1e-6)
    np.testing.assert_array_equal(targets[4], [0.0, 0.0, 1.0])  # a generated picture keeps its label
    assert record["other"] is other and record["weight"] == 0.7


def test_the_teachers_answers_are_computed_once(tiny_model_path: Path, tmp_path: Path, monkeypatch):
    import keras

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    files = [f"Cat/{i}.jpg" for i in range(5)]
    first = distill.teacher_probabilities(tiny_model_path, images, files, tmp_path)
    assert first.shape[0] == 5 and np.allclose(first.sum(axis=1), 1.0, atol=1e-5)

    def no_loading(*args, **kwargs):
        raise AssertionError("the teacher was loaded again")

    monkeypatch.setattr(keras.models, "load_model", no_loading)
    np.testing.assert_array_equal(distill.teacher_probabilities(tiny_model_path, images, files, tmp_path), first)
    # Other photos are another key: they need the teacher.
    with pytest.raises(AssertionError, match="loaded again"):
        distill.teacher_probabilities(tiny_model_path, images, files[::-1], tmp_path)
