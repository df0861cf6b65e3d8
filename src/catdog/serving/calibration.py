"""Temperature scaling: make "97% sure" mean right about 97% of the time.

One scalar ``T`` is fitted after training on the validation part by
minimising the negative log-likelihood of ``softmax(logits / T)`` (Guo et al.,
"On Calibration of Modern Neural Networks", 2017). The models end in a
softmax, so the logits are recovered as ``log(p)``: softmax is unchanged by
adding a constant to every logit, so ``softmax(log(p) / T)`` is exactly
temperature scaling. ``T > 1`` softens over-confident answers; the ranking of
the classes, and so the label, never changes.

Calibration says how likely each class is; :func:`answer` is the one rule
that turns those probabilities into an answer. A decision bias (a pet budget:
``training.max_pets_as_other``) moves only that choice, never the
probabilities, so the confidence reported, the calibrated probability of the
answer, stays what the data say.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_FLOOR = 1e-12  # log(0) guard: float32 softmax outputs can underflow to 0


def apply_temperature(
    probabilities: np.ndarray, temperature: float, class_bias: Sequence[float] | None = None
) -> np.ndarray:
    """Rescale probabilities as if their logits were divided by ``temperature`` (and shifted by ``class_bias``).

    Args:
        probabilities: ``(N, C)`` probabilities (rows sum to 1).
        temperature: The fitted ``T`` (> 0); 1 with no bias returns the input unchanged.
        class_bias: Optional ``(C,)`` offsets added to the scaled logits (see :func:`fit_class_bias`).

    Returns:
        ``(N, C)`` float32 probabilities.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    bias = np.zeros(probabilities.shape[-1]) if class_bias is None else np.asarray(class_bias, dtype=np.float64)
    if temperature == 1.0 and not bias.any():
        return probabilities.astype(np.float32)
    logits = np.log(np.clip(probabilities, _FLOOR, 1.0)) / temperature + bias
    return _softmax(logits).astype(np.float32)


def fit_class_bias(
    probabilities: np.ndarray,
    labels: Sequence[int],
    balanced: Sequence[int],
    counted: np.ndarray | None = None,
    decision_bias: Sequence[float] | None = None,
    step: float = 0.01,
    limit: float = 2.0,
) -> list[float]:
    """A logit offset that evens the recall of two classes on a held-out part.

    A model can be right as often overall yet favour one class (v1 called
    cats dogs twice as often as the reverse). Adding ``b`` to the first
    class's logit moves the boundary between the two; ``b`` is the offset in
    ``[-limit, limit]`` that makes their recalls closest, the most accurate
    such offset on a tie. Every other class keeps offset 0. Recall is that of
    the answers given (:func:`answer` with ``decision_bias``): a third class's
    decision offset takes back, or gives, more photos of one of the two than
    of the other, and the balance evens what users get.

    Args:
        probabilities: ``(N, C)`` calibrated probabilities of the validation part.
        labels: True class indices.
        balanced: The two class indices whose recall to even; empty for none.
        counted: Optional ``(N,)`` mask of the examples whose recall is evened (full-size pets: natively
            small ones lean the other way and have a target of their own); default every example.
        decision_bias: Optional ``(C,)`` offsets the answers are chosen with (the Other decision offset).
        step: Grid step of the search.
        limit: Largest offset considered.

    Returns:
        The ``(C,)`` offsets, all zero when ``balanced`` is empty.
    """
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _FLOOR, 1.0))
    labels = np.asarray(labels, dtype=np.int64)
    bias = [0.0] * logits.shape[1]
    if not balanced:
        return bias
    if decision_bias is not None:
        logits = logits + np.asarray(decision_bias, dtype=np.float64)
    if counted is not None:
        kept = np.asarray(counted, dtype=bool)
        logits, labels = logits[kept], labels[kept]
    first, second = balanced
    best = None
    for offset in np.arange(-limit, limit + step / 2, step):
        shifted = logits.copy()
        shifted[:, first] += offset
        predicted = shifted.argmax(axis=1)
        gap = abs((predicted[labels == first] == first).mean() - (predicted[labels == second] == second).mean())
        key = (round(gap, 9), -(predicted == labels).mean(), abs(offset))
        if best is None or key < best[0]:
            best = (key, float(round(offset, 6)))
    bias[first] = best[1]
    return bias


def fit_other_offset(
    probabilities: np.ndarray,
    labels: Sequence[int],
    other: int,
    cap: float,
    counted: np.ndarray | None = None,
    step: float = 0.01,
    limit: float = 4.0,
) -> float:
    """A logit offset for the "neither" class that sets aside at most ``cap`` of the real pets.

    Answering Other for a cat or a dog costs a user more than a missed
    "neither", so the boundary is placed by the pets: the offset is the
    largest in ``[-limit, limit]`` whose share of validation pets answered
    Other stays at or under ``cap``. A positive offset spends the unused part
    of that budget on flagging more photos of neither; a negative one buys
    pets back.

    Args:
        probabilities: ``(N, C)`` calibrated probabilities of the validation part.
        labels: True class indices.
        other: Index of the "neither" class.
        cap: Largest share of pets (every other class) that may be answered Other.
        counted: Optional ``(N,)`` mask of the examples the budget counts (natively small pets have
            their own target, and a share of them goes to Other at any offset worth having);
            default every pet.
        step: Grid step of the search.
        limit: Largest offset considered, either way.

    Returns:
        The offset to add to the Other log-probability when choosing (a decision bias for
        :func:`answer`, not a calibration); ``-limit`` when no offset in range meets the cap.
    """
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _FLOOR, 1.0))
    is_pet = np.asarray(labels, dtype=np.int64) != other
    if counted is not None:
        is_pet &= np.asarray(counted, dtype=bool)
    pets = logits[is_pet]
    if not len(pets):
        return 0.0
    rest = np.delete(pets, other, axis=1).max(axis=1)
    # A pet is answered Other when its Other logit plus the offset beats every pet logit.
    margin = rest - pets[:, other]
    best = -limit
    for offset in np.arange(-limit, limit + step / 2, step):
        if (margin < offset).mean() <= cap:
            best = float(round(offset, 6))
    return best


def fit_answer_rule(
    probabilities: np.ndarray,
    labels: Sequence[int],
    balanced: Sequence[int],
    other: int | None,
    cap: float | None,
    counted: np.ndarray | None = None,
) -> tuple[list[float], list[float]]:
    """The class bias evening two classes and the Other decision offset, fitted together.

    The balance evens the answers given, so it needs the Other offset
    (:func:`fit_class_bias`), and the offset is fitted on the balanced
    probabilities (:func:`fit_other_offset`): the offset, then the balance,
    then the offset again, which moves it by a step or two.

    Args:
        probabilities: ``(N, C)`` temperature-scaled probabilities of the validation part.
        labels: True class indices.
        balanced: The two class indices whose recall to even; empty for none.
        other: Index of the "neither" class, or None for no decision offset.
        cap: Largest share of counted pets that may be answered Other.
        counted: Optional ``(N,)`` mask of the examples both count (full-size pets).

    Returns:
        The class bias (a calibration, see :func:`apply_temperature`) and the decision bias (see :func:`answer`).
    """
    classes = np.asarray(probabilities).shape[1]

    def decision(bias: list[float]) -> list[float]:
        rule = [0.0] * classes
        if other is not None and cap is not None:
            rule[other] = fit_other_offset(apply_temperature(probabilities, 1.0, bias), labels, other, cap, counted)
        return rule

    decision_bias = decision([0.0] * classes)
    bias = fit_class_bias(probabilities, labels, balanced, counted, decision_bias)
    return bias, decision(bias) if any(bias) else decision_bias


def fit_temperature(probabilities: np.ndarray, labels: Sequence[int], low: float = 0.05, high: float = 20.0) -> float:
    """The temperature that minimises the negative log-likelihood of ``labels``.

    The NLL is convex in ``1/T``, so a golden-section search over ``log T``
    finds the minimum to within ~1e-6 without an optimisation library.

    Args:
        probabilities: ``(N, C)`` uncalibrated probabilities of a held-out part.
        labels: True class indices.
        low: Smallest temperature considered.
        high: Largest temperature considered.

    Returns:
        The fitted temperature.
    """
    logits = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _FLOOR, 1.0))
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        raise ValueError("cannot fit a temperature on no examples")

    def nll(log_t: float) -> float:
        return negative_log_likelihood(_softmax(logits / np.exp(log_t)), labels)

    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > 1e-6:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return float(np.exp((a + b) / 2.0))


def negative_log_likelihood(probabilities: np.ndarray, labels: Sequence[int]) -> float:
    """Mean ``-log p(true class)``."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.log(np.clip(picked, _FLOOR, 1.0)).mean())


def answer(probabilities: np.ndarray, decision_bias: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The answers to give and their confidence: the one rule, for serving, scoring and checks alike.

    The answer is ``argmax(log(p) + decision_bias)``; its confidence is the
    calibrated probability of that answer, ``p[answer]``. With no bias that is
    the most probable class and its probability. A bias moves the boundary
    between classes without touching the probabilities, so near a shifted
    boundary the answer can be less probable than another class (and under
    0.5): the confidence then says so rather than claiming the other class's
    certainty.

    Args:
        probabilities: ``(N, C)`` calibrated probabilities.
        decision_bias: Optional ``(C,)`` offsets added to the log-probabilities when choosing; None or
            zeros for the plain argmax.

    Returns:
        The ``(N,)`` answer indices and the ``(N,)`` float64 confidences.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if decision_bias is None or not np.any(decision_bias):
        labels = probabilities.argmax(axis=1)
    else:
        bias = np.asarray(decision_bias, dtype=np.float64)
        if bias.shape != probabilities.shape[-1:]:
            raise ValueError(f"decision_bias must hold {probabilities.shape[-1]} offsets, got shape {bias.shape}")
        labels = (np.log(np.clip(probabilities, _FLOOR, 1.0)) + bias).argmax(axis=1)
    return labels, probabilities[np.arange(len(labels)), labels]


def reliability(
    probabilities: np.ndarray, labels: Sequence[int], bins: int = 15, decision_bias: Sequence[float] | None = None
) -> dict:
    """Confidence against accuracy in equal-width bins of the answer's probability.

    The answer and its confidence come from :func:`answer`: with no decision
    bias, the top probability and whether the most probable class is right.

    Returns:
        ``ece`` (expected calibration error: the bins' ``|accuracy -
        confidence|`` weighted by their share of examples), and per bin its
        edges, count, mean confidence and accuracy (None for empty bins).
    """
    labels = np.asarray(labels, dtype=np.int64)
    answers, confidence = answer(probabilities, decision_bias)
    correct = answers == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 joins bin 0.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for i in range(bins):
        members = index == i
        count = int(members.sum())
        if count:
            conf, acc = float(confidence[members].mean()), float(correct[members].mean())
            ece += count / len(labels) * abs(acc - conf)
        else:
            conf = acc = None
        rows.append(
            {"low": float(edges[i]), "high": float(edges[i + 1]), "count": count, "confidence": conf, "accuracy": acc}
        )
    return {"ece": float(ece), "bins": rows}


def expected_calibration_error(
    probabilities: np.ndarray, labels: Sequence[int], bins: int = 15, decision_bias: Sequence[float] | None = None
) -> float:
    """ECE over ``bins`` equal-width bins of the answer's probability (see :func:`reliability`)."""
    return reliability(probabilities, labels, bins, decision_bias)["ece"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)
