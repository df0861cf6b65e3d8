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

:func:`flag_rate_at_pet_loss` compares them fairly: each flags a photo when the
model answers Other *or* its score passes a threshold chosen so that a given
share of real pets (validation) is set aside.
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


def threshold_for_loss(pet_scores: np.ndarray, answered_other: np.ndarray, loss: float) -> float:
    """The score threshold at which ``loss`` of the pets are flagged, counting those answered Other anyway.

    Args:
        pet_scores: Scores of real pets (validation).
        answered_other: Whether the model already answers Other for each of them.
        loss: Share of pets the rule may set aside in all (answered Other or over the threshold).

    Returns:
        The threshold: a pet is flagged when its score is above it. ``inf`` when the
        model's own Other answers already spend the whole share.
    """
    budget = int(np.floor(loss * len(pet_scores))) - int(answered_other.sum())
    rest = np.sort(np.asarray(pet_scores)[~answered_other])[::-1]
    if budget <= 0 or not len(rest):
        return float("inf")
    if budget >= len(rest):
        return float("-inf")
    return float(rest[budget])


def flag_rate_at_pet_loss(
    pet_scores: np.ndarray,
    pets_answered_other: np.ndarray,
    scores: np.ndarray,
    answered_other: np.ndarray,
    loss: float,
) -> tuple[float, float]:
    """Share of ``scores`` flagged (answered Other, or over the threshold set on the pets) and the threshold."""
    threshold = threshold_for_loss(pet_scores, pets_answered_other, loss)
    flagged = answered_other | (np.asarray(scores) > threshold)
    return float(flagged.mean()) if len(flagged) else float("nan"), threshold
