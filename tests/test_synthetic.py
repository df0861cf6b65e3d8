"""Generated non-photos for the Other class, and how they are scored."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.data.dataset import with_synthetic_other
from catdog.data.synthetic import KINDS, synthetic_images
from catdog.errors import DatasetError
from catdog.training.evaluate import synthetic_report

CLASSES = ["Cat", "Dog", "Other"]


def test_synthetic_images_are_seeded_and_take_turns_by_kind():
    images, kinds = synthetic_images(20, 40, seed=3)
    again, _ = synthetic_images(20, 40, seed=3)
    other, _ = synthetic_images(20, 40, seed=4)
    assert images.shape == (20, 40, 40, 3) and images.dtype == np.uint8
    assert np.array_equal(images, again) and not np.array_equal(images, other)
    assert kinds[: len(KINDS)] == list(KINDS) and kinds[len(KINDS)] == KINDS[0]


def test_synthetic_kinds_look_like_their_names():
    images, kinds = synthetic_images(len(KINDS) * 6, 64, seed=0)
    by_kind = {k: images[[i for i, kk in enumerate(kinds) if kk == k]].astype(float) for k in KINDS}
    # A plain picture barely varies; noise varies from pixel to pixel; a gradient varies smoothly.
    assert by_kind["plain"].std(axis=(1, 2)).max() < 8
    assert np.abs(np.diff(by_kind["noise"], axis=2)).mean() > 60
    gradient = by_kind["linear gradient"]
    assert np.abs(np.diff(gradient, axis=2)).mean() < 6 and gradient.std(axis=(1, 2)).mean() > 10
    # Black to white greys are among the plain pictures over a larger draw.
    many, many_kinds = synthetic_images(len(KINDS) * 60, 8, seed=1)
    plain = many[[i for i, k in enumerate(many_kinds) if k == "plain"]].astype(float)
    greys = plain[np.ptp(plain.mean(axis=(1, 2)), axis=1) < 6]
    assert len(greys) >= 10 and greys.mean(axis=(1, 2, 3)).min() < 60 and greys.mean(axis=(1, 2, 3)).max() > 195


def test_with_synthetic_other_appends_generated_others():
    images = np.zeros((5, 16, 16, 3), np.uint8)
    out, labels = with_synthetic_other(images, [0, 1, 0, 1, 2], CLASSES, 7, seed=2)
    assert out.shape == (12, 16, 16, 3)
    assert labels.tolist() == [0, 1, 0, 1, 2] + [2] * 7
    assert np.array_equal(out[:5], images) and out[5:].any()
    same, same_labels = with_synthetic_other(images, [0, 1, 0, 1, 2], CLASSES, 0, seed=2)
    assert same is images and same_labels.tolist() == [0, 1, 0, 1, 2]
    with pytest.raises(DatasetError, match="Other"):
        with_synthetic_other(images, [0, 1, 0, 1, 0], ["Cat", "Dog"], 3, seed=2)


def test_synthetic_report_counts_answers_of_other_by_kind():
    def plain_is_other(images):
        # Answers Other only where the picture is nearly flat, Cat elsewhere.
        flat = images.astype(float).std(axis=(1, 2)).max(axis=1) < 8
        return np.stack([~flat, np.zeros_like(flat), flat], axis=1).astype(float)

    report = synthetic_report(plain_is_other, 24, CLASSES, seed=0, count=len(KINDS) * 4)
    assert report["images"] == len(KINDS) * 4
    assert report["by_kind"]["plain"] == 1.0 and report["by_kind"]["noise"] == 0.0
    assert report["flagged"] == pytest.approx(report["answers"]["Other"] / report["images"])
    assert report["answers"]["Dog"] == 0
    # Scored on another seed than training draws from.
    train, _ = synthetic_images(8, 24, 0)
    scored, _ = synthetic_images(8, 24, 1)
    assert not np.array_equal(train, scored)
