"""The one training loop: the learning-rate plan, the time budget and the low-resolution shares."""

from __future__ import annotations

import math

import numpy as np
import pytest

from catdog.training import loop


def test_planned_epochs_fit_the_time_left():
    # 10 s per epoch, 100 s budget, 30 s gone after 2 epochs: 7 more fit.
    assert loop.planned_epochs(2, 30.0, 10.0, 100.0, 3, 200) == 9
    assert loop.planned_epochs(2, 30.0, 10.0, 100.0, 3, 5) == 5  # capped
    assert loop.planned_epochs(1, 99.0, 10.0, 100.0, 3, 200) == 3  # at least the minimum
    assert loop.planned_epochs(6, 150.0, 10.0, 100.0, 3, 200) == 6  # over time: stop now, never go back


def test_learning_rate_warms_up_then_decays_towards_zero():
    rates = [loop.learning_rate(e, planned=20, peak=1.0, warmup=3) for e in range(20)]
    assert rates[0] == pytest.approx(0.1) and rates[1] < rates[2] < rates[3]
    assert rates[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5 / 17)))
    assert all(a > b for a, b in zip(rates[3:], rates[4:], strict=False))
    assert 0 < rates[-1] < 0.01


def test_learning_rate_without_warm_up_starts_near_the_peak():
    rates = [loop.learning_rate(e, planned=2, peak=1.0, warmup=0) for e in range(2)]
    assert rates == pytest.approx([0.5 * (1 + math.cos(math.pi / 4)), 0.5 * (1 + math.cos(3 * math.pi / 4))])


@pytest.mark.parametrize(
    ("minutes", "min_epochs", "epochs_run"),
    [
        (None, 1, 4),  # no budget: every configured epoch, the cosine laid over all four
        (0.5, 1, 3),  # 30 s at 10 s an epoch: three fit
        (0.05, 2, 2),  # 3 s: too little even for one more, but never fewer than the minimum
    ],
)
def test_the_plan_sets_each_epochs_rate_and_the_budget_stops_the_run(settings, minutes, min_epochs, epochs_run):
    import keras

    training = settings.training.model_copy(
        update={"epochs": 4, "time_budget_minutes": minutes, "warmup_epochs": 1, "learning_rate": 0.01}
    )
    now = [0.0]

    class TenSecondEpochs(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            now[0] += 10.0

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[np.arange(16) % 3]
    plan = loop.epoch_plan(training, min_epochs, clock=lambda: now[0])
    history = loop.fit(model, training, plan, 16, [TenSecondEpochs()], x=x, y=y, batch_size=8, validation_data=(x, y))

    assert len(history.epoch) == epochs_run == plan.planned
    # The first epoch warms up before any re-planning; the cosine after it spans the planned epochs only.
    expected = [0.001] + [loop.learning_rate(e, epochs_run, 0.01, 1) for e in range(1, epochs_run)]
    assert history.history["learning_rate"] == pytest.approx(expected)
    assert float(model.optimizer.learning_rate) == pytest.approx(expected[-1])
    assert plan.durations == [10.0] * epochs_run
    facts = plan.facts(16)
    assert facts["epoch_seconds"] == [10.0] * epochs_run and facts["train_images_per_second"] == 1.6
    assert plan.budget_seconds == (minutes * 60 if minutes else None)


@pytest.mark.parametrize("balance", [True, False])
def test_low_res_shares_balance_the_natively_small_photos(settings, balance):
    aug = settings.training.augmentation.model_copy(
        update={"low_res_share": 0.2, "low_res_sides": (16, 96), "balance_low_res": balance}
    )
    # Cats: half natively small; dogs: none; then two generated (large) Others.
    labels, sides = [0, 0, 0, 0, 1, 1], [50, 60, 400, 500, 300, 300]
    shares = loop.training_low_res_shares(aug, ("Cat", "Dog", "Other"), labels, sides, 2)
    if balance:
        # Target: half small plus a fifth of the other half = 0.6 small pictures per class.
        np.testing.assert_allclose(shares, [0.2, 0.2, 0.2, 0.2, 0.6, 0.6, 0.6, 0.6], rtol=1e-6)
    else:
        np.testing.assert_allclose(shares, [0.2] * 8)
    # Sides unknown (a pack from before they were packed): no photo counts as small.
    unknown = loop.training_low_res_shares(aug, ("Cat", "Dog", "Other"), labels, None, 2)
    np.testing.assert_allclose(unknown, [0.2] * 8)
