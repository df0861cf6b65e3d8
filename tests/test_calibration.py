"""Temperature scaling and calibration error, checked against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from catdog.serving.calibration import (
    answer,
    apply_temperature,
    expected_calibration_error,
    fit_answer_rule,
    fit_class_bias,
    fit_other_offset,
    fit_temperature,
    negative_log_likelihood,
    reliability,
)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fitting_recovers_a_known_temperature(true_temperature: float) -> None:
    """Labels drawn from softmax(z / T) make T the maximum-likelihood temperature."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20000, 3))
    labels = np.array([rng.choice(3, p=p) for p in _softmax(logits / true_temperature)])
    fitted = fit_temperature(_softmax(logits), labels)
    assert fitted == pytest.approx(true_temperature, rel=0.06)


def test_fitted_temperature_lowers_the_likelihood_loss() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, (3000, 3))
    labels = np.array([rng.choice(3, p=p) for p in _softmax(logits / 3.0)])
    raw = _softmax(logits)
    fitted = fit_temperature(raw, labels)
    assert negative_log_likelihood(apply_temperature(raw, fitted), labels) < negative_log_likelihood(raw, labels)


def test_temperature_keeps_the_ranking_and_softens() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.05, 0.9, 0.05]])
    soft = apply_temperature(probs, 2.0)
    assert (soft.argmax(axis=1) == probs.argmax(axis=1)).all()
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    assert (soft.max(axis=1) < probs.max(axis=1)).all()
    # softmax(log p / 2) is proportional to sqrt(p).
    expected = np.sqrt(probs[0]) / np.sqrt(probs[0]).sum()
    assert np.allclose(soft[0], expected, atol=1e-6)
    assert np.allclose(apply_temperature(probs, 1.0), probs)
    with pytest.raises(ValueError):
        apply_temperature(probs, 0.0)


def test_zero_probabilities_do_not_produce_nan() -> None:
    probs = np.array([[1.0, 0.0, 0.0]])
    assert np.isfinite(apply_temperature(probs, 3.0)).all()


def test_ece_on_a_hand_made_case() -> None:
    # Four answers at 0.9 confidence, three right: |0.75 - 0.9| = 0.15, weight 4/6.
    # Two answers at 0.6 confidence, both right: |1.0 - 0.6| = 0.4, weight 2/6.
    probs = np.array([[0.9, 0.1]] * 4 + [[0.6, 0.4]] * 2)
    labels = np.array([0, 0, 0, 1, 0, 0])
    expected = 4 / 6 * 0.15 + 2 / 6 * 0.4
    assert expected_calibration_error(probs, labels, bins=15) == pytest.approx(expected)
    table = reliability(probs, labels, bins=10)
    filled = [b for b in table["bins"] if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in filled] == [(2, 1.0), (4, 0.75)]
    assert sum(b["count"] for b in table["bins"]) == 6


def test_a_perfectly_calibrated_model_has_zero_ece() -> None:
    probs = np.array([[1.0, 0.0]] * 5)
    assert expected_calibration_error(probs, [0] * 5) == 0.0


def _noisy_logits(rng: np.random.Generator, labels: np.ndarray, signal: float) -> np.ndarray:
    """Three classes' logits: unit normal noise, plus ``signal`` on each example's true class."""
    logits = rng.normal(0.0, 1.0, (len(labels), 3))
    logits[np.arange(len(labels)), labels] += signal
    return logits


def test_class_bias_evens_the_recall_of_two_classes() -> None:
    """A model that leans to class 1 gets an offset on class 0 that evens their recall."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 6000)
    logits = _noisy_logits(rng, labels, 2.0)
    logits[:, 1] += 0.8  # the lean: class 0 photos are often called class 1
    probs = _softmax(logits)

    def recall(p: np.ndarray, c: int) -> float:
        return float((p.argmax(axis=1)[labels == c] == c).mean())

    assert recall(probs, 1) - recall(probs, 0) > 0.1
    bias = fit_class_bias(probs, labels, [0, 1])
    assert bias[1] == bias[2] == 0.0 and 0.4 < bias[0] < 1.2
    evened = apply_temperature(probs, 1.0, bias)
    assert abs(recall(evened, 0) - recall(evened, 1)) < 0.02
    assert fit_class_bias(probs, labels, []) == [0.0, 0.0, 0.0]


def test_temperature_and_bias_together() -> None:
    probs = np.array([[0.6, 0.3, 0.1]])
    bias = [0.5, 0.0, -0.5]
    z = np.log(probs) / 2.0 + np.array(bias)
    expected = np.exp(z) / np.exp(z).sum()
    assert np.allclose(apply_temperature(probs, 2.0, bias), expected, atol=1e-6)


def _three_way(n_pets: int, n_other: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of Cat, Dog, Other where the Other score of pets and non-pets overlaps."""
    rng = np.random.default_rng(seed)
    labels = np.concatenate([rng.integers(0, 2, n_pets), np.full(n_other, 2)])
    return _softmax(_noisy_logits(rng, labels, 2.5)), labels


def _pets_as_other(probabilities: np.ndarray, labels: np.ndarray, offset: float) -> float:
    shifted = apply_temperature(probabilities, 1.0, [0.0, 0.0, offset])
    return float((shifted[labels != 2].argmax(axis=1) == 2).mean())


@pytest.mark.parametrize("cap", [0.002, 0.01, 0.05])
def test_other_offset_sets_aside_at_most_the_cap_of_pets_and_no_more_than_needed(cap: float) -> None:
    probabilities, labels = _three_way(4000, 2000)
    offset = fit_other_offset(probabilities, labels, 2, cap)
    assert _pets_as_other(probabilities, labels, offset) <= cap
    # One grid step more would pass the cap: the budget is spent, not wasted.
    assert _pets_as_other(probabilities, labels, offset + 0.01) > cap
    # A tighter cap flags fewer photos of neither.
    if cap < 0.05:
        looser = fit_other_offset(probabilities, labels, 2, 0.05)
        assert looser > offset


def test_other_offset_without_pets_is_zero_and_an_impossible_cap_is_the_limit() -> None:
    probabilities, labels = _three_way(0, 50)
    assert fit_other_offset(probabilities, labels, 2, 0.01) == 0.0
    certain = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])  # pets the model is sure are Other
    assert fit_other_offset(certain, np.array([0, 1]), 2, 0.0, limit=2.0) == -2.0


def test_other_offset_counts_only_the_pets_it_is_told_to():
    probabilities, labels = _three_way(4000, 2000, seed=3)
    # Make a tenth of the pets look like Other (natively small pets do): counted, they eat the budget.
    pets = np.flatnonzero(labels != 2)
    small = pets[:400]
    true = probabilities[small, labels[small]].copy()
    probabilities[small, labels[small]] = probabilities[small, 2]
    probabilities[small, 2] = true
    counted = np.ones(len(labels), dtype=bool)
    counted[small] = False
    everyone = fit_other_offset(probabilities, labels, 2, 0.01)
    full_size = fit_other_offset(probabilities, labels, 2, 0.01, counted=counted)
    assert full_size > everyone
    shifted = apply_temperature(probabilities, 1.0, [0.0, 0.0, full_size])
    assert (shifted[pets[400:]].argmax(axis=1) == 2).mean() <= 0.01
    assert (shifted[small].argmax(axis=1) == 2).mean() > 0.5


def test_with_no_decision_bias_the_answer_is_the_most_probable_class() -> None:
    probabilities = np.array([[0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]])
    for bias in (None, [0.0, 0.0, 0.0]):
        labels, confidences = answer(probabilities, bias)
        assert labels.tolist() == [0, 2, 1]
        assert confidences == pytest.approx([0.6, 0.5, 0.7])


def test_a_decision_bias_flips_a_borderline_answer_and_reports_that_class_probability() -> None:
    # Other is likelier in both rows; held back by log(2), it stays the answer only when over twice as likely.
    probabilities = np.array([[0.35, 0.03, 0.62], [0.2, 0.05, 0.75]])
    labels, confidences = answer(probabilities, [0.0, 0.0, -np.log(2.0)])
    assert labels.tolist() == [0, 2]
    # The confidence is the answer's own probability, under 0.5 and under Other's, not the top one.
    assert confidences == pytest.approx([0.35, 0.75])
    # Favouring Other flips the other way.
    labels, confidences = answer(np.array([[0.45, 0.2, 0.35]]), [0.0, 0.0, 0.5])
    assert labels.tolist() == [2] and confidences == pytest.approx([0.35])


def test_a_decision_bias_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="decision_bias must hold 3 offsets"):
        answer(np.array([[0.6, 0.3, 0.1]]), [0.0, 1.0])


def test_reliability_judges_the_answer_of_the_decision_rule() -> None:
    probabilities = np.array([[0.35, 0.03, 0.62], [0.1, 0.1, 0.8]])
    labels = [0, 2]
    plain = reliability(probabilities, labels, bins=10)
    assert reliability(probabilities, labels, bins=10, decision_bias=[0.0, 0.0, 0.0]) == plain
    # Plain argmax: Other twice, right once, at 0.62 and 0.8.
    assert [b["count"] for b in plain["bins"] if b["count"]] == [1, 1]
    assert plain["ece"] == pytest.approx((0.62 + 0.2) / 2)
    biased = reliability(probabilities, labels, bins=10, decision_bias=[0.0, 0.0, -np.log(2.0)])
    # The first row is answered Cat (right) at 0.35, the second Other (right) at 0.8.
    assert biased["bins"][3]["count"] == 1 and biased["bins"][3]["accuracy"] == 1.0
    assert biased["ece"] == pytest.approx((0.65 + 0.2) / 2)
    assert expected_calibration_error(probabilities, labels, 10, [0.0, 0.0, -np.log(2.0)]) == biased["ece"]


def test_a_pet_budget_as_a_decision_gives_the_shifted_answers_with_honest_confidences():
    """The old way (the offset inside the probabilities) and the decision rule answer alike; only the
    decision rule keeps the probabilities calibrated."""
    probabilities, labels = _three_way(3000, 1500, seed=4)
    calibrated = apply_temperature(probabilities, fit_temperature(probabilities, labels))
    offset = fit_other_offset(calibrated, labels, 2, 0.002)
    assert offset < 0
    decision_bias = [0.0, 0.0, offset]
    shifted = apply_temperature(calibrated, 1.0, decision_bias)
    answers, _ = answer(calibrated, decision_bias)
    np.testing.assert_array_equal(answers, shifted.argmax(axis=1))
    assert expected_calibration_error(calibrated, labels, decision_bias=decision_bias) < expected_calibration_error(
        shifted, labels
    )


def test_class_bias_evens_only_the_counted_examples() -> None:
    # Full-size photos lean to class 1, small ones (a third) lean hard to class 0: evened over every
    # photo, the small ones pull the offset away from what evens the full-size ones.
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 6000)
    small = rng.random(6000) < 1 / 3
    logits = _noisy_logits(rng, labels, 2.0)
    logits[~small, 1] += 0.8
    logits[small, 0] += 2.5
    logits[:, 2] -= 3.0
    probs = _softmax(logits)

    def gap(p: np.ndarray, mask: np.ndarray) -> float:
        predicted = p.argmax(axis=1)
        return abs(
            float((predicted[mask & (labels == 0)] == 0).mean()) - float((predicted[mask & (labels == 1)] == 1).mean())
        )

    everywhere = fit_class_bias(probs, labels, [0, 1])
    full_size = fit_class_bias(probs, labels, [0, 1], counted=~small)
    assert full_size[0] > 0.4 > everywhere[0]
    assert gap(apply_temperature(probs, 1.0, full_size), ~small) < 0.02
    assert gap(apply_temperature(probs, 1.0, everywhere), ~small) > 0.05


def test_class_bias_evens_the_answers_the_decision_offset_chooses() -> None:
    # Between each other the two classes are even, but class 1 loses many photos to class 2 by the plain
    # argmax (pets that look like Other). Judged on that argmax, class 0 is pushed down to make up for it;
    # with a decision offset that takes those answers back, there is nothing to even.
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 6000)
    logits = _noisy_logits(rng, labels, 2.0)
    logits[labels == 1, 2] += 2.0
    probs = _softmax(logits)
    assert fit_class_bias(probs, labels, [0, 1])[0] < -0.3
    assert abs(fit_class_bias(probs, labels, [0, 1], decision_bias=[0.0, 0.0, -10.0])[0]) <= 0.05


def test_the_answer_rule_evens_two_classes_and_keeps_the_pet_budget() -> None:
    # Class 1 photos look like the third class ("neither") more often than class 0's do.
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 3, 9000)
    logits = _noisy_logits(rng, labels, 2.5)
    logits[labels == 1, 2] += 1.0
    probs = _softmax(logits)
    bias, decision_bias = fit_answer_rule(probs, labels, [0, 1], other=2, cap=0.02)
    assert bias[1] == bias[2] == 0.0 and bias[0] < 0 and decision_bias[:2] == [0.0, 0.0]
    answers, _ = answer(apply_temperature(probs, 1.0, bias), decision_bias)
    pets = labels != 2
    assert (answers[pets] == 2).mean() <= 0.02
    recalls = [(answers[labels == c] == c).mean() for c in (0, 1)]
    assert abs(recalls[0] - recalls[1]) < 0.01
    # No balance: the decision offset alone, as fitted without one.
    assert fit_answer_rule(probs, labels, [], other=2, cap=0.02) == (
        [0.0, 0.0, 0.0],
        [0.0, 0.0, fit_other_offset(probs, labels, 2, 0.02)],
    )
