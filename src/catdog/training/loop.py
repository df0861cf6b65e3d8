"""The one training loop: optimizer, learning-rate plan, time budget, epoch log and ``fit``.

Both ways of training go through :func:`fit`: ``catdog train``
(:mod:`catdog.training.train`: TensorFlow, batches from tf.data, augmented
there) and ``catdog train_pack`` (:mod:`catdog.training.train_pack`: any Keras
backend, JAX on the GPU machine, numpy arrays with the augmentation layer
inside the model). They differ only in their settings and in how the data are
fed; the optimizer, the loss, the learning rates and the stopping rule are the
ones here.

The learning rate is set once per epoch by :func:`epoch_plan`: linear warm-up
from a tenth of ``training.learning_rate``, then cosine decay that reaches
zero at the end of the planned epochs. With a time budget
(``training.time_budget_minutes``) the plan re-counts after every epoch how
many epochs fit in the time left, lays the cosine over them and stops the run
there, so a run ends on a low rate whatever the machine's speed.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)


def make_optimizer(training, learning_rate):
    """AdamW with ``training.weight_decay`` on the convolution and dense kernels only.

    Args:
        training: The :class:`catdog.config.TrainingSettings`.
        learning_rate: A float or a Keras learning-rate schedule.
    """
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=training.weight_decay)
    # Not BatchNorm's scale and shift, nor biases: decaying them only fights the normalisation.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def learning_rate(epoch: int, planned: int, peak: float, warmup: int) -> float:
    """Linear warm-up from a tenth of ``peak``, then cosine decay reaching zero after ``planned`` epochs.

    The cosine is taken at the middle of each epoch, so the last epoch still learns a little.

    Args:
        epoch: The epoch, from 0.
        planned: How many epochs the run has in all.
        peak: ``training.learning_rate``, reached when the warm-up ends.
        warmup: ``training.warmup_epochs``; 0 starts at the peak.
    """
    if epoch < warmup:
        return peak * (0.1 + 0.9 * epoch / warmup)
    progress = min(1.0, (epoch - warmup + 0.5) / max(1, planned - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def planned_epochs(done: int, elapsed: float, last_epoch: float, budget: float, lowest: int, highest: int) -> int:
    """How many epochs the run should have in all, given the time left.

    Args:
        done: Epochs finished.
        elapsed: Seconds since training began.
        last_epoch: Seconds the last epoch took (the best guess for the next ones).
        budget: Seconds the whole run may take.
        lowest, highest: Bounds on the answer (never below ``done``).
    """
    more = math.floor(max(0.0, budget - elapsed) / max(last_epoch, 1e-9))
    return max(done, min(highest, max(lowest, done + more)))


def epoch_plan(training, min_epochs: int = 1, clock: Callable[[], float] = time.perf_counter):
    """A callback that sets each epoch's learning rate and, with a time budget, stops the run in time.

    The run has ``training.epochs`` at most; with ``training.time_budget_minutes``
    (compilation included) it re-plans after every epoch and stops when the
    planned epochs are done. It must come first among the callbacks of a fit:
    the others read its ``planned`` epochs, its ``rate`` and its ``durations``,
    and the CSV log and the run record take the epoch's ``learning_rate`` from
    the logs it fills.

    Args:
        training: The :class:`catdog.config.TrainingSettings`.
        min_epochs: With a time budget, the fewest epochs planned however slow they are.
        clock: Seconds from an arbitrary start (tests pass a fake one).

    Returns:
        A ``keras.callbacks.Callback`` with ``epochs``, ``budget_seconds``,
        ``planned``, ``rate``, ``durations`` (seconds of each epoch run in this
        process) and ``facts(images)`` (the run's speed and time for its record).
    """
    import keras

    epochs = training.epochs
    budget_seconds = training.time_budget_minutes * 60 if training.time_budget_minutes else None

    class EpochPlan(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = epochs
            self.budget_seconds = budget_seconds
            self.planned = epochs
            self.durations: list[float] = []
            self.started = self.epoch_started = clock()
            self.rate = training.learning_rate

        def on_train_begin(self, logs=None):
            self.started = clock()
            self.planned = epochs
            self.durations = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = clock()
            self.rate = learning_rate(epoch, self.planned, training.learning_rate, training.warmup_epochs)
            # Set between epochs, never inside the compiled step: on JAX the optimizer's
            # state is re-read at each epoch's start.
            self.model.optimizer.learning_rate = self.rate

        def on_epoch_end(self, epoch, logs=None):
            now = clock()
            self.durations.append(now - self.epoch_started)
            if logs is not None:
                logs["learning_rate"] = self.rate
            if budget_seconds is not None:
                self.planned = planned_epochs(
                    epoch + 1, now - self.started, self.durations[-1], budget_seconds, min_epochs, epochs
                )
                if epoch + 1 >= self.planned:
                    self.model.stop_training = True

        def facts(self, images: int) -> dict:
            """Time and speed of the epochs run in this process, for ``images`` training images an epoch."""
            seconds = sum(self.durations)
            return {
                "wall_time_seconds": round(clock() - self.started, 1),
                "train_images_per_second": round(images * len(self.durations) / seconds, 1) if seconds else 0.0,
                # Steady speed: the first epoch also compiles the step.
                "steady_images_per_second": round(images / min(self.durations), 1) if seconds else 0.0,
                "epoch_seconds": [round(d, 2) for d in self.durations],
            }

    return EpochPlan()


def epoch_logger(plan, images: int):
    """A callback that logs each epoch with its learning rate, images/s and the ETA of the planned run.

    Args:
        plan: The fit's :func:`epoch_plan` (planned epochs, rate, durations).
        images: Training images an epoch.
    """
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seconds = plan.durations[-1]
            left = (plan.planned - epoch - 1) * (sum(plan.durations) / len(plan.durations))
            values = "  ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()) if k != "learning_rate")
            log.info(
                "epoch %d/%d: %.1f s, %.0f images/s, lr %.5f, %s; ETA %.1f min",
                epoch + 1,
                plan.planned,
                seconds,
                images / seconds,
                plan.rate,
                values,
                left / 60,
            )

    return EpochLogger()


def fit(model, training, plan, images: int, callbacks: Sequence = (), **data):
    """Compile ``model`` and fit it under ``plan``: the one training loop of both entry points.

    Args:
        model: The network to train (uncompiled; the pack path wraps it with
            the augmentation layer).
        training: The :class:`catdog.config.TrainingSettings`.
        plan: Its :func:`epoch_plan`, which says how many epochs the fit has.
        images: Training images an epoch (for the epoch log).
        callbacks: More callbacks, run after the plan and before the epoch log.
        **data: How the data are fed: ``fit``'s ``x``, ``y``, ``sample_weight``,
            ``batch_size``, ``validation_data`` and ``shuffle``.

    Returns:
        The Keras ``History``.
    """
    import keras

    model.compile(
        optimizer=make_optimizer(training, training.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.label_smoothing),
        metrics=["accuracy"],
    )
    return model.fit(
        **data,
        epochs=plan.epochs,
        callbacks=[plan, *callbacks, epoch_logger(plan, images)],
        # The epoch log says what Keras's per-epoch line would; a progress bar only on a terminal.
        verbose=1 if sys.stdout.isatty() else 0,
    )


def training_low_res_shares(aug, classes: Sequence[str], labels, shorter_sides, generated: int) -> np.ndarray:
    """Each training image's chance of being shrunk (:func:`catdog.data.augment.low_res_shares`).

    Args:
        aug: The :class:`catdog.config.AugmentationSettings`.
        classes: The class names.
        labels: The real training photos' labels; they come first in the training arrays.
        shorter_sides: Each of those photos' shorter side as stored
            (:func:`catdog.data.dataset.shorter_sides`), or None when unknown:
            then none counts as natively small.
        generated: How many generated pictures follow them (large, labelled Other).
    """
    from catdog.data.augment import low_res_shares, natively_small
    from catdog.labels import other_index

    labels = np.asarray(labels, dtype=np.int64)
    if aug.balance_low_res and shorter_sides is not None:
        small = natively_small(shorter_sides, aug)
    else:
        small = np.zeros(len(labels), dtype=bool)
    # Generated pictures are labelled Other; without that class there are none, and 0 is never used.
    other = other_index(classes) or 0
    labels = np.concatenate([labels, np.full(generated, other, dtype=np.int64)])
    small = np.concatenate([small, np.zeros(generated, dtype=bool)])
    shares = low_res_shares(labels, small, aug.low_res_share, aug.balance_low_res)
    for index, name in enumerate(classes):
        mine = labels == index
        if mine.any():
            log.info(
                "%s: %.1f%% natively small, %.1f%% of its large photos shrunk",
                name,
                100 * small[mine].mean(),
                100 * float(shares[mine & ~small].mean()) if (mine & ~small).any() else 0.0,
            )
    return shares
