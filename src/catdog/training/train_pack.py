"""Train from a data pack for a fixed time, on any Keras backend.

``python -m catdog.training.train_pack PACK_DIR --architecture resnet --minutes 6 --out DIR``

This is how a model is trained on a GPU machine (one that has JAX, not
TensorFlow, and takes only a small upload): the
pack (:mod:`catdog.data.pack`) carries the training and validation images and the
settings; the network comes from the same builders as ``catdog.training.train``, and
augmentation runs inside the compiled step (:func:`catdog.data.augment.augmentation_layer`).

The run is given minutes, not epochs: after each epoch it re-plans how many
epochs fit in the time left and lays its cosine learning-rate decay over
them, so it ends on a low rate whatever the machine's speed. After each epoch
it saves the network's weights and a run record, so a run cut off still
leaves its last epoch. ``python -m catdog.training.train --adopt DIR`` then scores the
result here, on the original files, and writes the model and its metrics.

It runs on whichever Keras backend ``KERAS_BACKEND`` names: JAX on the GPU
machine (see the model card for the command), TensorFlow in the tests.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catdog import cli
from catdog.dirs import write_json_atomic
from catdog.errors import DatasetError

log = logging.getLogger("catdog.training.train_pack")


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


def learning_rate(epoch: int, planned: int, peak: float, warmup: int) -> float:
    """Linear warm-up from a tenth of ``peak``, then cosine decay reaching zero after ``planned`` epochs.

    The cosine is taken at the middle of each epoch, so the last epoch still learns a little.
    """
    if epoch < warmup:
        return peak * (0.1 + 0.9 * epoch / warmup)
    progress = min(1.0, (epoch - warmup + 0.5) / max(1, planned - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def hardware() -> str:
    """The device the backend trains on, in words."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.device_kind} ({device.platform}), {os.cpu_count()} CPU cores, JAX {jax.__version__}"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, Keras backend {backend}"


def budget_callback(training, budget_seconds: float, min_epochs: int, max_epochs: int, images: int):
    """A callback that sets each epoch's learning rate, re-plans the epochs and stops the run in time."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()
            self.planned = max_epochs
            self.durations: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()
            self.rate = learning_rate(epoch, self.planned, training.learning_rate, training.warmup_epochs)
            # Set between epochs: on JAX the optimizer's state is re-read at each epoch's start.
            self.model.optimizer.learning_rate = self.rate

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.durations.append(now - self.epoch_started)
            if logs is not None:
                logs["learning_rate"] = self.rate
            self.planned = planned_epochs(
                epoch + 1, now - self.started, self.durations[-1], budget_seconds, min_epochs, max_epochs
            )
            values = "  ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()) if k != "learning_rate")
            log.info(
                "epoch %d/%d: %.1f s, %.0f images/s, lr %.5f, %s",
                epoch + 1,
                self.planned,
                self.durations[-1],
                images / self.durations[-1],
                self.rate,
                values,
            )
            if epoch + 1 >= self.planned:
                self.model.stop_training = True

    return TimeBudget()


def saver_callback(model, out_dir: Path, record: dict, budget):
    """A callback that saves the network's weights and the run record after every epoch."""
    import keras

    arch = record["settings"]["architecture"]
    weights = out_dir / f"{arch}.weights.h5"
    partial = out_dir / f"{arch}.partial.weights.h5"

    class Saver(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            model.save_weights(partial)
            os.replace(partial, weights)
            for key, value in (logs or {}).items():
                record["history"].setdefault(key, []).append(float(value))
            seconds = sum(budget.durations)
            record.update(
                epochs_run=epoch + 1,
                epochs_planned=budget.planned,
                wall_time_seconds=round(time.perf_counter() - budget.started, 1),
                epoch_seconds=[round(d, 2) for d in budget.durations],
                # Steady speed: the first epoch also compiles the step.
                train_images_per_second=round(record["train_images"] * len(budget.durations) / seconds, 1),
                steady_images_per_second=round(record["train_images"] / min(budget.durations), 1),
                weights_file=weights.name,
            )
            write_json_atomic(out_dir / f"{arch}.run.json", record)

    return Saver()


def train_from_pack(
    training, spec: dict, parts: dict, out_dir: Path, budget_seconds: float, min_epochs: int = 3, max_epochs: int = 200
) -> dict:
    """Train ``training.architecture`` on a decoded pack within ``budget_seconds``.

    Args:
        training: The :class:`catdog.config.TrainingSettings` to train with.
        spec: The pack's spec (classes, class weights, provenance).
        parts: ``{"train": (images, labels), "validation": (images, labels)}``.
        out_dir: Where the weights and ``<arch>.run.json`` go.
        budget_seconds: Time for the whole run, compilation included.
        min_epochs, max_epochs: Bounds on the epochs run.

    Returns:
        The run record (also in ``<arch>.run.json``).

    Raises:
        DatasetError: The pack's images are not at ``training.image_size``.
    """
    import keras

    from catdog.data.augment import augmentation_layer
    from catdog.data.dataset import with_synthetic_other
    from catdog.models import build_model
    from catdog.training.train import make_optimizer

    (x_train, y_train), (x_val, y_val) = parts["train"], parts["validation"]
    if x_train.shape[1:] != (training.image_size, training.image_size, 3):
        raise DatasetError(f"the pack's images are {x_train.shape[1:]}, the settings want {training.image_size} px")
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(training.seed)
    classes = spec["classes"]
    eye = np.eye(len(classes), dtype=np.float32)
    weights = np.asarray(spec["class_weights"], dtype=np.float32)

    x_train, y_train = with_synthetic_other(x_train, y_train, classes, training.synthetic_other, training.seed)
    model = build_model(training, len(classes))
    pixels = keras.Input(x_train.shape[1:], dtype="uint8", name="pixels")
    trainer = keras.Model(pixels, model(augmentation_layer(training.augmentation, training.seed)(pixels)))
    trainer.compile(
        optimizer=make_optimizer(training, training.learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=training.label_smoothing),
        metrics=["accuracy"],
    )
    device = hardware()
    log.info(
        "%s: %s parameters, %d px, %d training images, batch %d, %.1f min on %s",
        training.architecture,
        f"{model.count_params():,}",
        training.image_size,
        len(x_train),
        training.batch_size,
        budget_seconds / 60,
        device,
    )
    record = {
        "settings": training.model_dump(mode="json"),
        "classes": classes,
        "class_weights": dict(zip(classes, spec["class_weights"], strict=True)),
        "pack": {key: spec.get(key) for key in ("format", "quality", "split_sha256", "manifest_sha256", "counts")},
        "train_images": len(x_train),
        "budget_seconds": budget_seconds,
        "hardware": device,
        "versions": {"python": platform.python_version(), "keras": keras.__version__, "numpy": np.__version__},
        "history": {},
    }
    budget = budget_callback(training, budget_seconds, min_epochs, max_epochs, len(x_train))
    trainer.fit(
        x_train,
        eye[y_train],
        sample_weight=weights[y_train],
        batch_size=training.batch_size,
        epochs=max_epochs,
        validation_data=(x_val, eye[y_val]),
        shuffle=True,
        callbacks=[budget, saver_callback(model, out_dir, record, budget)],
        verbose=0,
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    # No --config: the settings travel in the pack (catdog.data.pack reads config.yaml).
    parser = argparse.ArgumentParser(prog="catdog train_pack", description=__doc__.split("\n\n")[0])
    parser.add_argument("pack_dir", type=Path, help="folder with pack.npz and spec.json (catdog.data.pack)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the weights and run record")
    parser.add_argument("--architecture", choices=["inception", "resnet"], help="default: the pack's")
    parser.add_argument("--minutes", type=float, required=True, help="time for the run, compilation included")
    parser.add_argument("--min-epochs", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    args = parser.parse_args(argv)
    cli.configure_logging(args.verbose)

    from catdog.config import TrainingSettings
    from catdog.data.pack import read_pack

    started = time.perf_counter()
    spec, parts = read_pack(args.pack_dir)
    log.info("decoded the pack in %.1f s: %s", time.perf_counter() - started, json.dumps(spec["counts"]))
    training = TrainingSettings.model_validate(
        {
            **spec["training"],
            "architecture": args.architecture or spec["training"]["architecture"],
            # float32: with mixed_bfloat16 on JAX, BatchNorm's moving statistics
            # did not follow training (72% in training, 52% predicting, in a test here).
            "mixed_precision": False,
        }
    )
    record = train_from_pack(
        training, spec, parts, args.out, args.minutes * 60, min_epochs=args.min_epochs, max_epochs=args.max_epochs
    )
    history = record["history"]
    print(
        f"{training.architecture}: {record['epochs_run']} epochs in {record['wall_time_seconds'] / 60:.1f} min, "
        f"validation accuracy {history['val_accuracy'][-1]:.4f} (best {max(history['val_accuracy']):.4f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
