"""Open-set signals: how unlike every cat and dog the model knows a photo is.

A third softmax class learns "neither" from the kinds of photo it was shown;
these scores ask instead how far a photo lies from the pets, so they may also
catch kinds nobody collected. Each score is oriented the same way: **higher
means less like a pet**. All of it is numpy on the model's ``features`` map
and Dense head, so both serving runtimes can apply it.

* ``other_probability``: the softmax probability of Other (the baseline).
* ``pet_energy``: minus the log-sum-exp of the pet logits (Liu et al. 2020).
* ``pet_max_logit``: minus the largest pet logit (Hendrycks et al. 2022).
* ``knn``: cosine distance to the k-th nearest training pet (Sun et al. 2022).
* ``mahalanobis``: distance to the nearest pet class mean under a shared
  covariance (Lee et al. 2018).

They are compared fairly at equal pet loss: each rule flags a photo when its
score passes the threshold (:func:`threshold_at_loss`) at which a given share
of real pets (validation) is set aside; :func:`either` joins two scores into
one rule (flag when either is extreme for a pet).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SCORES = ("other_probability", "pet_energy", "pet_max_logit", "knn", "mahalanobis")


def pooled(features: np.ndarray) -> np.ndarray:
    """Global average pooling of ``(N, H, W, C)`` feature maps, as the model's head does."""
    return np.asarray(features, dtype=np.float32).mean(axis=(1, 2))


def logits(pooled_features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The Dense head's logits: ``pooled @ kernel + bias``."""
    return pooled_features @ kernel + bias


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=1, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=1, keepdims=True)))[:, 0]


def pet_energy(z: np.ndarray, pets: Sequence[int]) -> np.ndarray:
    """Minus the log-sum-exp of the pet classes' logits: low when the net sees a strong cat or dog."""
    return -_logsumexp(z[:, list(pets)])


def pet_max_logit(z: np.ndarray, pets: Sequence[int]) -> np.ndarray:
    """Minus the largest pet logit."""
    return -z[:, list(pets)].max(axis=1)


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def knn_distance(x: np.ndarray, bank: np.ndarray, k: int = 10, batch: int = 1024) -> np.ndarray:
    """Cosine distance from each row of ``x`` to its ``k``-th nearest row of ``bank``.

    Args:
        x: ``(N, C)`` pooled features.
        bank: ``(M, C)`` pooled features of training pets, already :func:`normalise` d.
        k: Which neighbour; ``k`` larger than ``M`` uses the farthest.
        batch: Rows of ``x`` compared at once (bounds the ``batch x M`` matrix).
    """
    x = normalise(np.asarray(x, dtype=np.float32))
    k = min(k, len(bank))
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), batch):
        similarity = x[start : start + batch] @ bank.T
        kth_similarity = -np.partition(-similarity, k - 1, axis=1)[:, k - 1]
        out[start : start + batch] = 1.0 - kth_similarity
    return out


def fit_mahalanobis(x: np.ndarray, labels: np.ndarray, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the shared precision matrix of pooled features.

    The covariance is shrunk towards its diagonal's mean (``shrinkage``), as
    a few thousand photos do not pin down a full covariance of hundreds of
    channels.

    Returns:
        ``(means, precision)``: ``(K, C)`` and ``(C, C)``, one mean per distinct label in sorted order.
    """
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, labels)]
    covariance = centred.T @ centred / max(1, len(x) - len(classes))
    target = np.trace(covariance) / len(covariance)
    covariance = (1 - shrinkage) * covariance + shrinkage * target * np.eye(len(covariance))
    return means.astype(np.float32), np.linalg.inv(covariance).astype(np.float32)


def mahalanobis(x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance to the nearest class mean."""
    x = np.asarray(x, dtype=np.float32)
    distances = []
    for mean in means:
        d = x - mean
        distances.append(np.einsum("ij,jk,ik->i", d, precision, d))
    return np.min(distances, axis=0)


def threshold_at_loss(pet_scores: np.ndarray, loss: float) -> float:
    """The threshold over which at most a share ``loss`` of the pets' scores lie.

    Args:
        pet_scores: Scores of real pets (validation).
        loss: The share of pets a rule "flag when the score is above it" may set aside.
    """
    ranked = np.sort(np.asarray(pet_scores))[::-1]
    allowed = int(np.floor(loss * len(ranked) + 1e-9))
    return float(ranked[allowed]) if allowed < len(ranked) else float("-inf")


def pet_percentile(pet_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Share of the pets' scores at or below each score: scores of different kinds on one scale."""
    reference = np.sort(np.asarray(pet_scores))
    return np.searchsorted(reference, np.asarray(scores), side="right") / len(reference)


def either(pet_scores: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> np.ndarray:
    """A rule that flags when any of several scores is extreme: the largest of their pet percentiles.

    Args:
        pet_scores: For each score, its values on real pets (validation).
        scores: For each score, its values on the photos to judge.
    """
    return np.max([pet_percentile(p, x) for p, x in zip(pet_scores, scores, strict=True)], axis=0)
