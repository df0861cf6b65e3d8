"""Train the configured network: ``python -m catdog.training.train [--resume]``.

Reads the validated manifest, makes (or reuses) the seeded split, trains with
augmentation, AdamW and a warm-up plus cosine learning-rate schedule, keeps
the weights that did best on the validation part, and only then looks at
the test part once. Every epoch leaves a backup, so ``--resume`` continues an
interrupted run where it stopped.

Writes ``model/<arch>.h5``, ``model/<arch>.metrics.json``, and the plots
``model/<arch>_curves.png`` and ``model/<arch>_confusion.png`` (see
:mod:`catdog.training.results`). ``catdog ship`` then installs it as what
the app loads (see :mod:`catdog.export.ship`).
``--adopt``, ``--average`` and ``--ensemble`` make a model from trained ones
instead (see :mod:`catdog.training.compose`); ``--recalibrate`` rescores one.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from catdog import cli, paths
from catdog.config import Settings
from catdog.data.dataset import (
    Split,
    class_weights,
    load_arrays,
    prepare_split,
    shorter_sides,
    tf_dataset,
    with_synthetic_other,
)
from catdog.dirs import ensure_dirs
from catdog.errors import ModelError
from catdog.labels import OTHER
from catdog.training.cpu import use_mixed_precision
from catdog.training.results import recalibrate, refuse_overwriting_inputs, write_results

log = logging.getLogger("catdog.training.train")  # not __name__: that is "__main__" under -m


def compile_model(model, settings: Settings, steps_per_epoch: int) -> None:
    """AdamW with linear warm-up then cosine decay; label-smoothed cross-entropy."""
    import keras

    t = settings.training
    total = max(1, t.epochs * steps_per_epoch)
    warmup = min(total - 1, t.warmup_epochs * steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        # Warm up from a tenth of the peak; without warm-up, start at the peak.
        initial_learning_rate=t.learning_rate / 10 if warmup else t.learning_rate,
        decay_steps=max(1, total - warmup),
        warmup_target=t.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=make_optimizer(t, schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=t.label_smoothing),
        metrics=["accuracy"],
    )


def make_optimizer(t, learning_rate):
    """AdamW with ``training.weight_decay`` on the convolution and dense kernels only.

    Args:
        t: The training settings.
        learning_rate: A float or a Keras learning-rate schedule.
    """
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=t.weight_decay)
    # Not BatchNorm's scale and shift, nor biases: decaying them only fights the normalisation.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def epoch_logger(epochs: int, images_per_epoch: int):
    """A Keras callback that logs each epoch with images/s and the ETA of the whole run.

    Its ``durations`` list holds the seconds of each epoch run in this process.
    """
    import keras

    class EpochLogger(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.durations: list[float] = []

        def on_train_begin(self, logs=None):
            self.durations = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.start
            self.durations.append(seconds)
            left = (epochs - epoch - 1) * (sum(self.durations) / len(self.durations))
            values = "  ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()) if k != "learning_rate")
            log.info(
                "epoch %d/%d: %.0f s, %.0f images/s, %s; ETA %.1f min",
                epoch + 1,
                epochs,
                seconds,
                images_per_epoch / seconds,
                values,
                left / 60,
            )

    return EpochLogger()


def read_history(path: Path) -> dict[str, list[float]]:
    """Per-epoch values from Keras's CSV log (which survives a resume)."""
    history: dict[str, list[float]] = {}
    if not path.exists():
        return history
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                if key != "epoch" and value not in ("", None):
                    history.setdefault(key, []).append(float(value))
    return history


def train(settings: Settings, resume: bool = False, output: Path | None = None, init_from: Path | None = None) -> dict:
    """Train, calibrate, evaluate on validation and test parts, and save model, metrics and plots.

    Args:
        settings: The loaded settings.
        resume: Continue from the last epoch backup instead of starting over.
        output: Where to write the model (default ``<model.dir>/<arch>.h5``).
        init_from: A trained model of the same architecture to start from
            (fine-tuning) instead of random weights; its classifier may have
            fewer classes (see :func:`transfer_weights`).

    Returns:
        The metrics written to ``<arch>.metrics.json``.
    """
    ensure_dirs(settings)
    t = settings.training
    output = refuse_overwriting_inputs(
        Path(output or paths.trained_model(settings.model.dir, t.architecture)), [init_from]
    )
    runs = paths.run_dir(settings.data.artifacts_dir, t.architecture)
    if not resume and runs.exists():
        log.info("starting over: removing the previous run in %s (use --resume to continue it)", runs)
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)

    split, root, manifest_hash = prepare_split(settings)
    log.info("split: %s", json.dumps(split.counts()))
    arrays = load_arrays(settings, split, root)
    model, run = fit(settings, split, arrays, root, runs, resume, init_from)
    return write_results(
        settings,
        model,
        run,
        split,
        arrays,
        root,
        output,
        {"manifest_sha256": manifest_hash, "initialised_from": init_from},
    )


def fit(settings: Settings, split: Split, arrays: dict, root: Path, runs: Path, resume: bool, init_from: Path | None):
    """Fit the configured network; return the best weights as a float32 model and the run's facts."""
    import keras

    from catdog.models import build_model

    t = settings.training
    keras.utils.set_random_seed(t.seed)
    num_classes = len(settings.data.classes)
    weights = class_weights(split.labels["train"], num_classes, t.class_weight_power)
    log.info(
        "class weights: %s", ", ".join(f"{c} {w:.3f}" for c, w in zip(settings.data.classes, weights, strict=True))
    )
    # Class weights come from the real photos; the generated Others get the Other weight.
    train_images, train_labels = with_synthetic_other(
        arrays["train"], split.labels["train"], settings.data.classes, t.synthetic_other, t.seed
    )
    shares = training_low_res_shares(settings, split, root, len(train_labels) - len(split.labels["train"]))
    train_ds = tf_dataset(
        train_images, train_labels, num_classes, t.batch_size, True, t.augmentation, t.seed, weights, shares
    )
    val_ds = tf_dataset(arrays["validation"], split.labels["validation"], num_classes, t.batch_size, False)
    steps = math.ceil(len(train_images) / t.batch_size)

    # bfloat16 activations roughly halve training time on CPUs with AVX-512 BF16 (and multiply it
    # by ten where it is emulated: see catdog/training/cpu.py); the weights stay float32, and the saved model
    # is a float32 copy.
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if use_mixed_precision(t.mixed_precision) else "float32")
    try:
        model = build_model(t, num_classes)
        if init_from is not None:
            copied = transfer_weights(keras.models.load_model(init_from, compile=False), model)
            log.info("starting from %s (%d layers copied)", init_from, copied)
        compile_model(model, settings, steps)
        log.info(
            "%s: %s parameters, input %dx%d, %d training images, %d epochs, %s",
            t.architecture,
            f"{model.count_params():,}",
            t.image_size,
            t.image_size,
            len(train_images),
            t.epochs,
            keras.mixed_precision.global_policy().name,
        )
        best_weights = runs / "best.weights.h5"
        progress = epoch_logger(t.epochs, len(train_images))
        callbacks = [
            keras.callbacks.BackupAndRestore(str(runs / "backup")),
            keras.callbacks.ModelCheckpoint(
                str(best_weights),
                monitor="val_accuracy",
                mode="max",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=_best_so_far(runs / "history.csv") if resume else None,
            ),
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=t.early_stopping_patience or t.epochs
            ),
            keras.callbacks.CSVLogger(str(runs / "history.csv"), append=resume),
            progress,
        ]
        started = time.perf_counter()
        # shuffle=False: the tf.data pipeline already reshuffles every epoch.
        model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=t.epochs,
            callbacks=callbacks,
            shuffle=False,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        fit_seconds = time.perf_counter() - started
        if best_weights.exists():
            model.load_weights(str(best_weights))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    final = build_model(t, num_classes)
    final.set_weights(model.get_weights())
    run = {
        "wall_time_seconds": round(fit_seconds, 1),
        # Counted for this process only: a resumed run reports the epochs it ran itself.
        "train_images_per_second": round(len(train_images) * len(progress.durations) / fit_seconds, 1),
        "epoch_seconds": [round(d, 1) for d in progress.durations],
        "class_weights": dict(zip(settings.data.classes, weights, strict=True)),
        "history": read_history(runs / "history.csv"),
    }
    return final, run


def training_low_res_shares(settings: Settings, split: Split, root: Path, generated: int):
    """Each training image's chance of being shrunk (:func:`catdog.data.augment.low_res_shares`).

    Args:
        settings: The loaded settings.
        split: The split; its training files come first in the training arrays.
        root: The folder the split's paths are relative to.
        generated: How many generated pictures follow them (large, labelled Other).
    """
    import numpy as np

    from catdog.data.augment import low_res_shares

    aug = settings.training.augmentation
    labels = np.asarray(split.labels["train"], dtype=np.int64)
    if aug.balance_low_res:
        small = shorter_sides([str(root / f) for f in split.files["train"]]) < aug.low_res_sides[1]
    else:
        small = np.zeros(len(labels), dtype=bool)
    other = settings.data.classes.index(OTHER) if OTHER in settings.data.classes else 0
    labels = np.concatenate([labels, np.full(generated, other, dtype=np.int64)])
    small = np.concatenate([small, np.zeros(generated, dtype=bool)])
    shares = low_res_shares(labels, small, aug.low_res_share, aug.balance_low_res)
    for index, name in enumerate(settings.data.classes):
        mine = labels == index
        if mine.any():
            log.info(
                "%s: %.1f%% natively small, %.1f%% of its large photos shrunk",
                name,
                100 * small[mine].mean(),
                100 * float(shares[mine & ~small].mean()) if (mine & ~small).any() else 0.0,
            )
    return shares


def transfer_weights(source, target) -> int:
    """Copy weights layer by layer (by name) from ``source`` into ``target``.

    Layers whose weights have the same shapes are copied whole. The classifier
    of a model with fewer classes (v1's Cat/Dog) gives its columns to the
    first classes of the target, whose extra classes keep their fresh
    initialisation.

    Returns:
        The number of layers copied.

    Raises:
        ModelError: No layer matched: the models do not share an architecture.
    """
    copied = 0
    for layer in target.layers:
        try:
            old = source.get_layer(layer.name).get_weights()
        except ValueError:
            continue
        new = layer.get_weights()
        if not old or len(old) != len(new):
            continue
        if all(a.shape == b.shape for a, b in zip(old, new, strict=True)):
            layer.set_weights(old)
        elif layer.name == "predictions" and all(
            a.shape[:-1] == b.shape[:-1] and a.shape[-1] <= b.shape[-1] for a, b in zip(old, new, strict=True)
        ):
            for a, b in zip(old, new, strict=True):
                b[..., : a.shape[-1]] = a
            layer.set_weights(new)
        else:
            continue
        copied += 1
    if not copied:
        raise ModelError("the model to start from shares no layer with the configured architecture")
    return copied


def _best_so_far(history_csv: Path) -> float | None:
    """The best validation accuracy an interrupted run reached, so a resumed
    run only replaces the best checkpoint with a better one."""
    values = read_history(history_csv).get("val_accuracy")
    return max(values) if values else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog train", "Train the configured architecture on the validated manifest.")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from its last epoch")
    parser.add_argument("--output", type=Path, help="model file to write (default: model/<architecture>.h5)")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL_H5",
        help="start from this trained model's weights (same architecture and size) to fine-tune it",
    )
    parser.add_argument(
        "--adopt",
        type=Path,
        metavar="RUN_DIR",
        help="do not train: score and save the configured architecture's run trained from a pack (catdog train_pack)",
    )
    parser.add_argument(
        "--average",
        type=Path,
        nargs=2,
        metavar=("FIRST_H5", "SECOND_H5"),
        help="do not train: interpolate two models of one architecture in weight space (see --share), score and save",
    )
    parser.add_argument(
        "--ensemble",
        type=Path,
        nargs="+",
        metavar="MODEL_H5",
        help="do not train: combine these models into one that averages their logits, score and save it",
    )
    parser.add_argument(
        "--share", type=float, default=0.5, help="with --average: the second model's share, 0-1 (default 0.5)"
    )
    parser.add_argument(
        "--recalibrate",
        type=Path,
        metavar="MODEL_H5",
        help="do not train: refit this trained model's calibration on the validation part and rescore it",
    )
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)
    if args.recalibrate:
        metrics = recalibrate(settings, args.recalibrate)
        print(
            f"test accuracy {metrics['test']['accuracy']:.4f}, calibration {metrics['calibration']['temperature']:.3f} "
            f"{metrics['calibration']['class_bias']}"
        )
        return 0
    if args.ensemble or args.average or args.adopt:
        from catdog.training import compose

        if args.ensemble:
            metrics = compose.ensemble(settings, args.ensemble, args.output)
        elif args.average:
            metrics = compose.average(settings, *args.average, args.share, args.output)
        else:
            metrics = compose.adopt(settings, args.adopt, settings.training.architecture, args.output)
    else:
        metrics = train(settings, resume=args.resume, output=args.output, init_from=args.init_from)
    took = metrics.get("wall_time_seconds")  # an ensemble trained nothing itself
    trained = f", {metrics['epochs_run']} epochs, {took / 60:.1f} min" if took else ""
    print(f"test accuracy {metrics['test']['accuracy']:.4f} ({metrics['architecture']}{trained})")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
