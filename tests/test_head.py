"""The Dense head refitted over a composed model's features (catdog/training/head.py)."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.config import load_config
from catdog.data.synthetic import plain_pictures
from catdog.errors import DatasetError
from catdog.training import head
from helpers import build_tiny_model

SIZE = 32
CLASSES = ("Cat", "Dog", "Other")


def _settings(*overrides: str):
    return load_config(
        overrides=[
            f"training.image_size={SIZE}",
            "training.synthetic_other=48",
            "training.head_refit.plain_pictures=24",
            "training.head_refit.epochs=400",  # one step an epoch here: a real refit takes thousands
            *overrides,
        ],
        environ={},
    ).training


def _tinted(rng: np.random.Generator, count: int, tint: tuple[int, int, int]) -> np.ndarray:
    """Textured photos-to-be whose class is their tint: what the tiny networks' features can tell apart."""
    texture = rng.uniform(0, 90, (count, SIZE, SIZE, 1))
    return np.clip(texture + np.asarray(tint, np.float64) * rng.uniform(0.6, 1.0, (count, 1, 1, 1)), 0, 255).astype(
        np.uint8
    )


def _photos(seed: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tints = ((160, 20, 20), (20, 20, 160), (20, 140, 20))  # Cat red, Dog blue, Other green
    images = np.concatenate([_tinted(rng, per_class, tint) for tint in tints])
    return images, np.repeat(np.arange(3), per_class)


@pytest.fixture
def pair():
    from catdog.models.ensemble import build_ensemble

    return build_ensemble([build_tiny_model(SIZE, classes=3, name="a"), build_tiny_model(SIZE, classes=3, name="b")])


def test_plain_pictures_are_one_exact_colour_each_greys_and_colours():
    pictures = plain_pictures(10, 8, seed=3)
    assert pictures.shape == (10, 8, 8, 3) and pictures.dtype == np.uint8
    assert all((p == p[0, 0]).all() for p in pictures)  # no noise at all
    assert all(len(set(p[0, 0])) == 1 for p in pictures[:5])  # the first half grey
    assert any(len(set(p[0, 0])) > 1 for p in pictures[5:])
    np.testing.assert_array_equal(pictures, plain_pictures(10, 8, seed=3))
    assert not np.array_equal(pictures, plain_pictures(10, 8, seed=4))


def test_the_head_set_adds_generated_and_plain_pictures_as_other():
    images, labels = _photos(0, 10)
    x, y, kinds = head.head_training_set(images, labels, CLASSES, _settings())
    assert kinds == {"photos": 30, "generated": 48, "plain": 24}
    assert len(x) == len(y) == 30 + 48 + 24
    np.testing.assert_array_equal(x[:30], images)
    assert (y[30:] == 2).all()
    with pytest.raises(DatasetError, match="Other"):
        head.head_training_set(images[:20], labels[:20], ("Cat", "Dog"), _settings("training.synthetic_other=0"))


def test_the_folded_head_gives_the_logits_of_the_head_over_standardized_features():
    rng = np.random.default_rng(5)
    kernel, bias = rng.normal(size=(6, 3)), rng.normal(size=3)
    mean, scale = rng.normal(size=6), rng.uniform(0.01, 50, 6)
    features = rng.normal(mean, scale, (20, 6))
    folded_kernel, folded_bias = head.fold(kernel, bias, mean, scale)
    np.testing.assert_allclose(features @ folded_kernel + folded_bias, ((features - mean) / scale) @ kernel + bias)


def test_a_channel_that_barely_varies_gets_no_large_weight():
    """Per-channel standardizing gave such channels weights a hundred times the rest, which int8 cannot hold."""
    rng = np.random.default_rng(1)
    # As many steps as a real refit takes (~1,900): Adam at its fixed rate needs them.
    features = rng.normal(5.0, [1e-3, 3.0, 4.0, 1.0], (16000, 4)).astype(np.float32)
    scores = np.stack([np.zeros(len(features)), (features[:, 1] - 5.0) / 3.0, (features[:, 2] - 5.0) / 4.0], 1)
    labels = scores.argmax(axis=1)
    features[:, 0] += 1e-3 * labels  # nearly dead, yet it tells the classes apart once scaled up
    kernel, bias = head.fit_dense(features, labels, 3, l2=0.01, epochs=30, seed=2)
    assert kernel.shape == (4, 3) and bias.shape == (3,)
    assert ((features @ kernel + bias).argmax(axis=1) == labels).mean() > 0.9
    assert np.abs(kernel[0]).max() < np.abs(kernel[1:3]).max()


def test_a_refitted_head_learns_what_the_averaged_heads_did_not(pair):
    images, labels = _photos(0, 40)
    fresh, fresh_labels = _photos(99, 20)
    blanks = np.stack([np.full((SIZE, SIZE, 3), v, np.uint8) for v in (200, 240, 255)])  # a blank page, as uploaded
    before = [w.copy() for w in pair.get_weights()]
    assert (pair.predict(fresh, verbose=0).argmax(axis=1) == fresh_labels).mean() < 0.7  # untrained heads

    facts = head.refit_head(pair, images, labels, CLASSES, _settings())

    assert (pair.predict(fresh, verbose=0).argmax(axis=1) == fresh_labels).mean() >= 0.9
    assert (pair.predict(blanks, verbose=0).argmax(axis=1) == 2).all()
    assert facts["pictures"] == {"photos": 120, "generated": 48, "plain": 24}
    assert facts["l2"] == 0.01 and facts["epochs"] == 400 and facts["fitted_accuracy"] > 0.8
    # Only the head moved: the members' networks are frozen.
    changed = [not np.array_equal(a, b) for a, b in zip(before, pair.get_weights(), strict=True)]
    head_weights = {id(w) for w in pair.get_layer("predictions").weights}
    assert [id(w) in head_weights for w in pair.weights] == changed
