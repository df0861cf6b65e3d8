"""Train the configured network: ``python -m catdog.training.train [--resume]``.

Reads the validated manifest, makes (or reuses) the seeded split, trains in
the one training loop of :mod:`catdog.training.loop` (augmentation, AdamW, a
warm-up plus cosine learning rate over ``training.epochs`` or, with
``training.time_budget_minutes``, over the epochs that fit in that time),
keeps the weights that did best on the validation part, and only then looks
at the test part once. Every epoch leaves a backup, so ``--resume`` continues an
interrupted run where it stopped.

Writes ``<model.dir>/<arch>.h5`` (``artifacts/models``), ``<arch>.metrics.json``, and the plots
``<arch>_curves.png`` and ``<arch>_confusion.png`` beside it (see
:mod:`catdog.training.results`). ``catdog ship`` then installs it as what
the app loads (see :mod:`catdog.export.ship`).
``--adopt``, ``--average`` and ``--ensemble`` make a model from trained ones
instead (see :mod:`catdog.training.compose`); ``--recalibrate`` rescores one.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from catdog import cli, paths
from catdog.config import Settings
from catdog.data.dataset import (
    Split,
    class_weights,
    example_weights,
    load_arrays,
    prepare_split,
    shorter_sides,
    tf_dataset,
    with_synthetic_other,
)
from catdog.dirs import ensure_dirs
from catdog.errors import ModelError
from catdog.labels import other_index
from catdog.training import loop
from catdog.training.cpu import use_mixed_precision
from catdog.training.results import recalibrate, refuse_overwriting_inputs, write_results

log = logging.getLogger("catdog.training.train")  # not __name__: that is "__main__" under -m


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


def train(
    settings: Settings,
    resume: bool = False,
    output: Path | None = None,
    init_from: Path | None = None,
    distill_from: Path | None = None,
) -> dict:
    """Train, calibrate, evaluate on validation and test parts, and save model, metrics and plots.

    Args:
        settings: The loaded settings.
        resume: Continue from the last epoch backup instead of starting over.
        output: Where to write the model (default ``<model.dir>/<arch>.h5``).
        init_from: A trained model of the same architecture to start from
            (fine-tuning) instead of random weights; its classifier may have
            fewer classes (see :func:`transfer_weights`).
        distill_from: A trained model (an ensemble, typically) whose answers the
            cats' and dogs' targets blend in (see :mod:`catdog.training.distill`).

    Returns:
        The metrics written to ``<arch>.metrics.json``.
    """
    ensure_dirs(settings)
    t = settings.training
    output = refuse_overwriting_inputs(
        Path(output or paths.trained_model(settings.model.dir, t.architecture)), [init_from, distill_from]
    )
    runs = paths.run_dir(settings.data.artifacts_dir, t.architecture)
    if not resume and runs.exists():
        log.info("starting over: removing the previous run in %s (use --resume to continue it)", runs)
        shutil.rmtree(runs)
    runs.mkdir(parents=True, exist_ok=True)

    split, root, manifest_hash = prepare_split(settings)
    log.info("split: %s", json.dumps(split.counts()))
    arrays = load_arrays(settings, split, root)
    model, run = fit(settings, split, arrays, root, runs, resume, init_from, distill_from)
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


def fit(
    settings: Settings,
    split: Split,
    arrays: dict,
    root: Path,
    runs: Path,
    resume: bool,
    init_from: Path | None,
    distill_from: Path | None = None,
):
    """Fit the configured network; return the best weights as a float32 model and the run's facts.

    The loop is :func:`catdog.training.loop.fit`, fed by tf.data; every epoch
    leaves a backup (for ``--resume``), the weights best on validation and a
    line in ``history.csv``.
    """
    import keras

    from catdog.models import build_model

    t = settings.training
    classes = settings.data.classes
    keras.utils.set_random_seed(t.seed)
    num_classes = len(classes)
    weights = class_weights(split.labels["train"], num_classes, t.class_weight_power)
    log.info("class weights: %s", ", ".join(f"{c} {w:.3f}" for c, w in zip(classes, weights, strict=True)))
    # Class weights come from the real photos; the generated Others get the Other weight.
    train_images, train_labels = with_synthetic_other(
        arrays["train"], split.labels["train"], classes, t.synthetic_other, t.seed
    )
    # Reading every header takes a while on a slow disk: only when the shares or the weights depend on it.
    needs_sides = t.augmentation.balance_low_res or t.other_weights.small != 1.0
    sides = shorter_sides([str(root / f) for f in split.files["train"]]) if needs_sides else None
    generated = len(train_labels) - len(split.labels["train"])
    shares = loop.training_low_res_shares(t.augmentation, classes, split.labels["train"], sides, generated)
    multipliers = _other_multipliers(settings, split, root, sides, generated)
    sample_weights = example_weights(train_labels, weights, other_index(classes), multipliers)
    targets, distilled = None, None
    if distill_from is not None:
        targets, distilled = _distilled_targets(settings, split, arrays["train"], train_labels, distill_from)
    train_ds = tf_dataset(
        train_images,
        train_labels,
        num_classes,
        t.batch_size,
        True,
        t.augmentation,
        t.seed,
        sample_weights,
        shares,
        targets,
    )
    val_ds = tf_dataset(arrays["validation"], split.labels["validation"], num_classes, t.batch_size, False)

    # bfloat16 activations roughly halve training time on CPUs with AVX-512 BF16 (and multiply it
    # by ten where it is emulated: see catdog/training/cpu.py); the weights stay float32, and the saved model
    # is a float32 copy.
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if use_mixed_precision(t.mixed_precision) else "float32")
    try:
        model = build_model(t, num_classes)
        if init_from is not None:
            copied = transfer_weights(keras.models.load_model(init_from, compile=False), model)
            log.info("starting from %s (%d layers copied)", init_from, copied)
        log.info(
            "%s: %s parameters, input %dx%d, %d training images, %d epochs%s, %s",
            t.architecture,
            f"{model.count_params():,}",
            t.image_size,
            t.image_size,
            len(train_images),
            t.epochs,
            f" or {t.time_budget_minutes} min" if t.time_budget_minutes else "",
            keras.mixed_precision.global_policy().name,
        )
        best_weights = runs / "best.weights.h5"
        plan = loop.epoch_plan(t)
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
        ]
        # shuffle=False: the tf.data pipeline already reshuffles every epoch.
        loop.fit(model, t, plan, len(train_images), callbacks, x=train_ds, validation_data=val_ds, shuffle=False)
        facts = plan.facts(len(train_images))
        if best_weights.exists():
            model.load_weights(str(best_weights))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    final = build_model(t, num_classes)
    final.set_weights(model.get_weights())
    run = {
        # Counted for this process only: a resumed run reports the epochs it ran itself.
        **facts,
        "class_weights": dict(zip(classes, weights, strict=True)),
        "history": read_history(runs / "history.csv"),
    }
    if distilled is not None:
        run["distilled_from"] = distilled
    return final, run


def _other_multipliers(settings: Settings, split: Split, root: Path, sides, generated: int):
    """Each training picture's weight multiplier as a photo of neither (``training.other_weights``), or None.

    None when every photo weighs alike. The generated pictures, which follow the real photos, weigh 1:
    they are no kind of photo a user takes.
    """
    import numpy as np

    from catdog.data.augment import natively_small
    from catdog.data.groups import file_groups

    chosen = settings.training.other_weights
    if chosen.uniform:
        return None
    groups = np.asarray(file_groups(split.files["train"], root, settings.data.source_groups))
    multipliers = np.array([chosen.groups.get(group, 1.0) for group in groups], dtype=np.float64)
    small = (
        np.zeros(len(groups), dtype=bool) if sides is None else natively_small(sides, settings.training.augmentation)
    )
    multipliers[small] *= chosen.small
    other = other_index(settings.data.classes)
    mine = np.asarray(split.labels["train"]) == other
    for name in sorted(set(chosen.groups) - set(groups[mine])):
        # Not an error: leave-one-group-out trains without the group it holds out.
        log.warning("training.other_weights names group %r, which has no training photo of neither", name)
    log.info(
        "photos of neither weighted: %s; natively small x%g (%d photos)",
        ", ".join(f"{g} x{w:g} ({int((groups[mine] == g).sum())} photos)" for g, w in sorted(chosen.groups.items())),
        chosen.small,
        int(small[mine].sum()),
    )
    return np.concatenate([multipliers, np.ones(generated)])


def _distilled_targets(settings: Settings, split: Split, photos, labels, teacher_file: Path):
    """The blended targets of every training picture, and what the metrics say of the teacher.

    The teacher answers the real photos; the generated pictures after them keep their label.
    """
    import numpy as np

    from catdog.dirs import file_sha256
    from catdog.training import distill

    classes = settings.data.classes
    cache = paths.cache_dir(settings.data.artifacts_dir)
    taught = distill.teacher_probabilities(teacher_file, photos, split.files["train"], cache)
    if taught.shape[1] != len(classes):
        raise ModelError(f"the teacher {str(teacher_file)!r} answers {taught.shape[1]} classes, not {len(classes)}")
    generated = np.eye(len(classes), dtype=np.float32)[labels[len(photos) :]]
    teacher = np.concatenate([taught, generated])
    weight, other = settings.training.distill_weight, settings.training.distill_other
    # The generated pictures stay one-hot either way: their rows above are their labels.
    kept = None if other else other_index(classes)
    targets = distill.soft_targets(labels, teacher, len(classes), kept, weight)
    return targets, {"file": str(teacher_file), "sha256": file_sha256(teacher_file), "weight": weight, "other": other}


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
    parser.add_argument("--output", type=Path, help="model file to write (default: <model.dir>/<arch>.h5)")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL_H5",
        help="start from this trained model's weights (same architecture and size) to fine-tune it",
    )
    parser.add_argument(
        "--distill-from",
        type=Path,
        metavar="TEACHER_H5",
        help="blend this trained model's answers (an ensemble's, typically) into the cats' and dogs' targets "
        "(training.distill_weight is its share)",
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
        "--refit-head",
        action="store_true",
        help="with --ensemble: fit one Dense head over the members' features on the training part "
        "(training.head_refit) instead of averaging their heads",
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
    if args.refit_head and not args.ensemble:
        parser.error("--refit-head goes with --ensemble")
    settings = cli.settings_from_args(args)
    if args.recalibrate:
        metrics = recalibrate(settings, args.recalibrate)
        print(
            f"test accuracy {metrics['test']['accuracy']:.4f}, calibration {metrics['calibration']['temperature']:.3f} "
            f"{metrics['calibration']['class_bias']}, decision bias {metrics['calibration']['decision_bias']}"
        )
        return 0
    if args.ensemble or args.average or args.adopt:
        from catdog.training import compose

        if args.ensemble:
            metrics = compose.ensemble(settings, args.ensemble, args.output, refit_head=args.refit_head)
        elif args.average:
            metrics = compose.average(settings, *args.average, args.share, args.output)
        else:
            metrics = compose.adopt(settings, args.adopt, settings.training.architecture, args.output)
    else:
        metrics = train(
            settings, resume=args.resume, output=args.output, init_from=args.init_from, distill_from=args.distill_from
        )
    took = metrics.get("wall_time_seconds")  # an ensemble trained nothing itself
    trained = f", {metrics['epochs_run']} epochs, {took / 60:.1f} min" if took else ""
    print(f"test accuracy {metrics['test']['accuracy']:.4f} ({metrics['architecture']}{trained})")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
