"""The open-set scores' maths on hand-made features: far from every pet is flagged, a pet prototype is not."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.training import openset

PETS = [0, 1]  # Cat, Dog; Other is 2


def _pets(rng: np.random.Generator, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Two tight clusters of pooled features around the cat and dog prototypes."""
    labels = rng.integers(0, 2, n)
    prototypes = np.array([[5.0, 0.0, 0.0, 1.0], [0.0, 5.0, 0.0, 1.0]])
    return prototypes[labels] + rng.normal(0, 0.3, (n, 4)), labels


def test_pooled_and_logits_follow_the_head() -> None:
    features = np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)
    pooled = openset.pooled(features)
    np.testing.assert_allclose(pooled, features.mean(axis=(1, 2)))
    kernel, bias = np.ones((4, 3)), np.array([0.0, 1.0, -1.0])
    np.testing.assert_allclose(openset.logits(pooled, kernel, bias), pooled.sum(axis=1, keepdims=True) + bias)


def test_energy_and_max_logit_rise_as_the_pet_logits_fall() -> None:
    z = np.array([[8.0, 1.0, 0.0], [1.0, 1.0, 0.0], [-3.0, -4.0, 5.0]])
    energy = openset.pet_energy(z, PETS)
    np.testing.assert_allclose(energy[1], -np.log(2 * np.e))
    assert energy[0] < energy[1] < energy[2]
    np.testing.assert_allclose(openset.pet_max_logit(z, PETS), [-8.0, -1.0, 3.0])


def test_knn_distance_is_small_near_a_pet_and_large_far_away() -> None:
    rng = np.random.default_rng(0)
    pets, _ = _pets(rng)
    bank = openset.normalise(pets)
    near, far = np.array([[5.0, 0.1, 0.0, 1.0]]), np.array([[0.0, 0.0, 5.0, 0.0]])
    d_near, d_far = openset.knn_distance(np.vstack([near, far]), bank, k=5)
    assert d_near < 0.01 and d_far > 0.8
    # An exact copy of a bank row is at distance 0 from its first neighbour.
    assert openset.knn_distance(pets[:1], bank, k=1)[0] == pytest.approx(0.0, abs=1e-5)


def test_mahalanobis_flags_a_point_off_the_pet_clusters_and_not_a_prototype() -> None:
    rng = np.random.default_rng(1)
    pets, labels = _pets(rng, 500)
    means, precision = openset.fit_mahalanobis(pets, labels)
    np.testing.assert_allclose(means, [[5, 0, 0, 1], [0, 5, 0, 1]], atol=0.1)
    prototype, far = np.array([[0.0, 5.0, 0.0, 1.0]]), np.array([[2.5, 2.5, 0.0, 1.0]])
    distances = openset.mahalanobis(np.vstack([prototype, far]), means, precision)
    assert distances[0] < 1.0 < 10.0 < distances[1]
    # With no shrinkage and an identity covariance the distance is the squared Euclidean one.
    iso = rng.normal(0, 1, (20000, 3))
    means, precision = openset.fit_mahalanobis(iso, np.zeros(len(iso), int), shrinkage=0.0)
    assert openset.mahalanobis(np.array([[2.0, 0.0, 0.0]]), means, precision)[0] == pytest.approx(4.0, rel=0.05)


def test_threshold_sets_aside_the_given_share_of_pets() -> None:
    pets = np.arange(1, 101, dtype=float)  # 1..100
    for loss in (0.01, 0.05, 0.2):
        threshold = openset.threshold_at_loss(pets, loss)
        assert (pets > threshold).mean() == pytest.approx(loss)
    assert (pets > openset.threshold_at_loss(pets, 0.0)).sum() == 0


def test_either_flags_when_one_score_is_extreme_for_a_pet() -> None:
    rng = np.random.default_rng(2)
    pets_a, pets_b = rng.normal(0, 1, 1000), rng.normal(10, 1, 1000)
    np.testing.assert_allclose(openset.pet_percentile(pets_a, [-100.0, 100.0]), [0.0, 1.0])
    joined_pets = openset.either([pets_a, pets_b], [pets_a, pets_b])
    threshold = openset.threshold_at_loss(joined_pets, 0.02)
    assert 0.01 <= (joined_pets > threshold).mean() <= 0.02  # ties in percentiles may keep a few under
    # Typical on both, extreme on the first, extreme on the second.
    photos = openset.either([pets_a, pets_b], [np.array([0.0, 5.0, 0.0]), np.array([10.0, 10.0, 15.0])])
    assert list(photos > threshold) == [False, True, True]
