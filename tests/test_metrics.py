"""Per-source figures: accuracy, recall, the share answered Other and the accuracy on a source's pets alone."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.training.metrics import format_source_report, source_report

CLASSES = ["Cat", "Dog", "Other"]


def _one_hot(answers: list[int]) -> np.ndarray:
    return np.eye(3)[answers]


def test_source_report_counts_each_source_apart() -> None:
    truth = [0, 1, 2, 2, 0, 1]
    answers = [0, 2, 2, 0, 0, 1]
    sources = ["small", "small", "small", "small", "big", "big"]
    report = source_report(truth, _one_hot(answers), sources, CLASSES)
    small = report["small"]
    assert small["images"] == 4
    assert small["accuracy"] == pytest.approx(2 / 4)
    assert small["recall"] == {"Cat": 1.0, "Dog": 0.0, "Other": 0.5}
    assert small["answered_other"] == pytest.approx(2 / 4)
    assert small["pets_accuracy"] == pytest.approx(1 / 2)  # the cat right, the dog called Other
    assert report["big"]["pets_accuracy"] == 1.0
    assert "pets_accuracy" not in source_report([2], _one_hot([2]), ["others"], CLASSES)["others"]
    assert "small" in format_source_report(report, "group") and "group" in format_source_report(report, "group")
