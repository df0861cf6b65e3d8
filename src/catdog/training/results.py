"""A trained model's results: scored once, saved with its metrics and plots, read back by later steps.

:func:`score` fits the calibration on the validation part and scores the
validation and test parts; :func:`write_results` saves the model as
``<model.dir>/<arch>.h5`` (``artifacts/models/``) with ``<arch>.metrics.json`` and its plots beside it,
whichever step made the model (:mod:`catdog.training.train`,
:mod:`catdog.training.compose`); :func:`read_metrics` reads them back
(``catdog ship`` chooses among trained models by them) and
:func:`recalibrate` refits and rescores a trained model without training.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from catdog import paths
from catdog.config import Settings
from catdog.data.dataset import Split, load_arrays, prepare_split
from catdog.dirs import atomic_write, file_sha256, write_json_atomic
from catdog.errors import ModelError
from catdog.labels import other_index
from catdog.serving.inference import read_metrics_file
from catdog.training.metrics import classification_report, format_report

log = logging.getLogger(__name__)


def predict_in_batches(model, images, batch_size: int = 128):
    """Probabilities for a uint8 image array, through a compiled forward pass.

    The compiled function is kept on the model, so repeated calls (one per
    part, one per thumbnail size) trace it once.
    """
    import tensorflow as tf

    from catdog.training.evaluate import in_batches

    forward = getattr(model, "_catdog_forward", None)
    if forward is None:

        @tf.function(reduce_retracing=True)
        def forward(x):
            return model(tf.cast(x, tf.float32), training=False)

        model._catdog_forward = forward
    return in_batches(lambda batch: forward(batch).numpy(), images, model.output_shape[-1], batch_size)


def save_h5_atomic(model, path: Path) -> None:
    """Save a model without optimizer state as .h5, renaming into place when complete."""
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        # Serving needs the weights only; the optimizer's state would triple the file.
        keras.saving.save_model(model, tmp, include_optimizer=False)


def versions() -> dict[str, str]:
    """Versions of the packages that shape a trained model."""
    import keras
    import numpy
    import PIL
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def refuse_overwriting_inputs(output: Path, inputs: Sequence[Path | None]) -> Path:
    """Return ``output``, unless it is one of the models a step reads: it would be replaced by its own result.

    Raises:
        ModelError: ``output`` names one of ``inputs`` (the default output, ``<model.dir>/<architecture>.h5``,
            does when fine-tuning or blending the model trained before it).
    """
    for given in inputs:
        if given is not None and Path(given).resolve() == Path(output).resolve():
            raise ModelError(f"{output} is also an input of this step and would be overwritten; choose --output")
    return output


def balanced_indices(settings: Settings) -> list[int]:
    """Indices of ``training.balance_recall`` in ``data.classes`` (two, or none: the config checks which)."""
    return [settings.data.classes.index(name) for name in settings.training.balance_recall]


def _budget_counts(settings: Settings, root: Path, files: Sequence[str], labels: Sequence[int], other: int | None):
    """Which pets a pet budget and a recall balance count: full-size ones.

    Full-size: shorter side at least ``augmentation.low_res_sides``' top. Natively small pets are
    judged by their own target: a share of them goes to Other at any offset worth having, and
    their cat/dog balance is not full-size pets' (the model card's small-photo figures).

    Returns:
        A boolean mask over ``files`` for :func:`catdog.serving.calibration.fit_other_offset` and
        :func:`~catdog.serving.calibration.fit_class_bias`, or None (every pet counts) when the part
        has no full-size pet at all (a tiny generated dataset).
    """
    import numpy as np

    from catdog.data.augment import natively_small
    from catdog.data.dataset import shorter_sides

    full = ~natively_small(shorter_sides([str(root / f) for f in files]), settings.training.augmentation)
    return full if (full & (np.asarray(labels) != other)).any() else None


def score(
    settings: Settings, model, split: Split, arrays: dict, root: Path, name: str | None = None
) -> tuple[dict, dict, dict]:
    """Fit the calibration on the validation part; score the validation and test parts, by source and in low resolution.

    The calibration is the temperature and the recall-evening ``class_bias``. A pet budget
    (``training.max_pets_as_other``) is not part of it: its offset is a ``decision_bias`` that moves
    only which class is answered (:func:`catdog.serving.calibration.answer`), so the probabilities
    stay as calibrated as without a budget. Every figure judges the answers so chosen.

    Args:
        name: What the printed reports call the model (default ``training.architecture``; an ensemble says so).

    Returns:
        The reports by part, the calibration (temperature, class and decision bias, test reliability
        before and after) and the low-resolution report.
    """
    from catdog.serving.calibration import (
        apply_temperature,
        fit_answer_rule,
        fit_temperature,
        reliability,
    )
    from catdog.training.evaluate import breakdown, format_breakdown, low_resolution_report, synthetic_report

    classes = settings.data.classes
    raw = {part: predict_in_batches(model, arrays[part]) for part in ("validation", "test")}
    temperature = fit_temperature(raw["validation"], split.labels["validation"])
    other = other_index(classes)
    cap = settings.training.max_pets_as_other
    other_offset = cap is not None and other is not None
    balanced = balanced_indices(settings)
    # Full-size pets only, both for evening cat and dog recall and for the pet budget (read from the
    # files' headers, so only when either is asked for).
    counted = (
        _budget_counts(settings, root, split.files["validation"], split.labels["validation"], other)
        if balanced or other_offset
        else None
    )
    bias, decision_bias = fit_answer_rule(
        apply_temperature(raw["validation"], temperature), split.labels["validation"], balanced, other, cap, counted
    )
    calibrated = {part: apply_temperature(probs, temperature, bias) for part, probs in raw.items()}
    reports = {}
    for part in ("validation", "test"):
        reports[part] = classification_report(split.labels[part], calibrated[part], classes, decision_bias)
        reports[part].update(
            breakdown(
                split.labels[part],
                calibrated[part],
                split.files[part],
                classes,
                root,
                settings.data.source_groups,
                decision_bias,
            )
        )
        print(format_report(f"{name or settings.training.architecture} on the {part} part", reports[part]))
        print(format_breakdown(reports[part]))
    calibration = {
        "method": "temperature scaling, then a logit offset evening the recall of "
        + (
            " and ".join(settings.training.balance_recall) + " as answered, over full-size pets"
            if settings.training.balance_recall
            else "no classes"
        )
        + (
            f"; the answer is then chosen with a decision offset of the Other log-probability answering Other for "
            f"at most {cap:.2%} of full-size pets, which leaves the probabilities as they are"
            if other_offset
            else ""
        )
        + "; all fitted on the validation part",
        "temperature": temperature,
        "class_bias": bias,
        "decision_bias": decision_bias,
        # Before: the network's own answers (its top class) and probabilities, which the decision bias,
        # fitted on calibrated probabilities, does not apply to.
        "test_before": reliability(raw["test"], split.labels["test"]),
        "test_after": reliability(calibrated["test"], split.labels["test"], decision_bias=decision_bias),
    }
    log.info(
        "temperature %.3f, class bias %s, decision bias %s: test ECE %.4f -> %.4f",
        temperature,
        bias,
        decision_bias,
        calibration["test_before"]["ece"],
        calibration["test_after"]["ece"],
    )

    def calibrated_forward(x):
        return apply_temperature(predict_in_batches(model, x), temperature, bias)

    low_res = low_resolution_report(
        calibrated_forward,
        [str(root / f) for f in split.files["test"]],
        split.labels["test"],
        settings.training.image_size,
        classes,
        decision_bias=decision_bias,
    )
    if other is not None:
        reports["synthetic_other"] = synthetic_report(
            calibrated_forward,
            settings.training.image_size,
            classes,
            settings.training.seed,
            decision_bias=decision_bias,
        )
    return reports, calibration, low_res


def write_results(
    settings: Settings,
    model,
    run: dict,
    split: Split,
    arrays: dict,
    root: Path,
    output: Path,
    provenance: dict,
    architecture: str | None = None,
) -> dict:
    """Score the model (:func:`score`), then save it with its metrics and plots.

    ``architecture`` names the model in its metrics (default ``training.architecture``).
    """
    import tensorflow as tf

    from catdog.training.plots import plot_history

    t = settings.training
    arch = architecture or t.architecture
    classes = settings.data.classes
    reports, calibration, low_res = score(settings, model, split, arrays, root, arch)
    save_h5_atomic(model, output)
    history = run.pop("history")
    # A run adopted from a pack says where it trained; a run here, this machine.
    here = f"{platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}"
    trained_on = run.pop("hardware", None) or here
    epochs_run = len(history.get("loss", []))
    init_from = provenance.get("initialised_from")
    metrics = {
        "architecture": arch,
        "model_file": output.name,
        "model_sha256": file_sha256(output),
        "image_size": t.image_size,
        "parameters": int(model.count_params()),
        "classes": list(classes),
        "class_counts": split.counts(),
        "epochs_configured": t.epochs,
        "epochs_run": epochs_run,
        "best_epoch": 1 + max(range(epochs_run), key=lambda i: history["val_accuracy"][i]) if epochs_run else None,
        **run,
        "initialised_from": {"file": str(init_from), "sha256": file_sha256(init_from)} if init_from else None,
        "manifest_sha256": provenance.get("manifest_sha256"),
        "settings": settings.training.model_dump(),
        "versions": versions(),
        "hardware": trained_on,
        "calibration": calibration,
        "validation": reports["validation"],
        "test": reports["test"],
        "test_low_resolution": low_res,
        "test_synthetic_other": reports.get("synthetic_other"),
        "history": history,
    }
    metrics_path = paths.trained_metrics(output)
    write_json_atomic(metrics_path, metrics)
    if history:  # an ensemble trained nothing itself: its members' metrics hold their curves
        plot_history(history, paths.plot(output, "curves"), f"{arch}: training curves")
    plot_test_results(output, arch, classes, reports["test"], calibration)
    log.info("wrote %s, %s and plots", output, metrics_path)
    return metrics


def plot_test_results(model_file: Path, arch: str, classes, test: dict, calibration: dict) -> None:
    """The confusion matrix and reliability diagram of the test part, beside the model."""
    from catdog.training.plots import plot_confusion, plot_reliability

    plot_confusion(
        test["confusion_matrix"]["rows_true_columns_predicted"],
        classes,
        paths.plot(model_file, "confusion"),
        f"{arch}: test part ({test['accuracy']:.1%})",
    )
    plot_reliability(
        calibration["test_before"],
        calibration["test_after"],
        paths.plot(model_file, "reliability"),
        f"{arch}: test part, T = {calibration['temperature']:.2f}",
    )


def read_metrics(model_file: Path) -> dict:
    """The metrics written beside a trained model (:func:`catdog.serving.inference.read_metrics_file`).

    Raises:
        ModelError: They are missing or unreadable.
    """
    return read_metrics_file(paths.trained_metrics(model_file))


def recalibrate(settings: Settings, model_file: Path) -> dict:
    """Refit the calibration of a trained model on the validation part and rescore it, without training.

    Updates the calibration, the validation and test reports and the plots in
    the model's metrics file; everything about its training stays as it was.

    Raises:
        ModelError: The metrics file is missing or belongs to another model file.
    """
    import keras

    metrics_path = paths.trained_metrics(model_file)
    metrics = read_metrics(model_file)
    if metrics.get("model_sha256") != file_sha256(model_file):
        raise ModelError(f"{metrics_path} was written for another model file than {model_file}")
    split, root, _ = prepare_split(settings)
    arrays = load_arrays(settings, split, root)
    model = keras.models.load_model(model_file, compile=False)
    reports, calibration, low_res = score(settings, model, split, arrays, root, metrics.get("architecture"))
    metrics.update(
        calibration=calibration,
        validation=reports["validation"],
        test=reports["test"],
        test_low_resolution=low_res,
        test_synthetic_other=reports.get("synthetic_other"),
    )
    write_json_atomic(metrics_path, metrics)
    plot_test_results(model_file, metrics["architecture"], settings.data.classes, reports["test"], calibration)
    log.info("recalibrated %s: %s", model_file, metrics_path)
    return metrics
