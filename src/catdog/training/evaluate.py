"""Evaluate a saved model: ``python -m catdog.training.evaluate --model M.h5 (--data DIR | --split test)``.

``--data`` takes any PetImages-style folder (one sub-folder per class); it is
validated first and only the valid images are scored. ``--split`` scores a
part of the split saved by training (the test part is the honest number).
Prints a table, writes the metrics as JSON, exits non-zero on failure.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from catdog import cli, paths
from catdog.data.dataset import decode_images, load_split, source_of
from catdog.data.groups import file_groups
from catdog.dirs import write_json_atomic
from catdog.labels import OTHER, other_index
from catdog.serving.calibration import answer
from catdog.training.metrics import classification_report, format_report, format_source_report, source_report

log = logging.getLogger("catdog.training.evaluate")  # not __name__: that is "__main__" under -m


def in_batches(forward, images: np.ndarray, num_outputs: int, batch_size: int = 128) -> np.ndarray:
    """Run ``forward`` (a batch of images -> numpy probabilities) over ``images`` in batches.

    Returns:
        ``(N, num_outputs)`` probabilities; an empty array for no images.
    """
    outputs = [forward(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, num_outputs), np.float32)


def predict_files(predictor, paths: Sequence[str | Path], batch_size: int = 128) -> np.ndarray:
    """Probabilities for image files, decoded with the shared preprocessing.

    Args:
        predictor: A loaded :class:`catdog.serving.inference.Predictor`.
        paths: Image files.
        batch_size: Images per forward pass.

    Returns:
        ``(N, num_classes)`` probabilities.
    """
    images = decode_images([str(p) for p in paths], predictor.input_size, desc="decoding")
    return in_batches(predictor.predict_arrays, images, len(predictor.classes), batch_size)


LOW_RESOLUTION_SIDES = (16, 24, 32, 48, 64)


def low_resolution_images(paths: Sequence[str | Path], side: int, input_size: int) -> np.ndarray:
    """The images as a small upload of ``side`` pixels would reach the model.

    Each file is shrunk to ``side`` x ``side`` with the app's own resize, then
    that small picture goes through the app's preprocessing again (stretched
    up to ``input_size``), exactly as if a user had uploaded the thumbnail.
    """
    from PIL import Image

    from catdog.serving.preprocess import resize_image

    small = decode_images([str(p) for p in paths], side, desc=f"shrinking to {side} px")
    return (
        np.stack([resize_image(Image.fromarray(image), input_size) for image in small])
        if len(small)
        else np.zeros((0, input_size, input_size, 3), np.uint8)
    )


def low_resolution_report(
    predict,
    paths: Sequence[str | Path],
    labels: Sequence[int],
    input_size: int,
    classes: Sequence[str],
    sides: Sequence[int] = LOW_RESOLUTION_SIDES,
    decision_bias: Sequence[float] | None = None,
) -> dict:
    """Accuracy and recall per class when every image arrives as a ``side``-pixel thumbnail.

    Args:
        predict: Uint8 ``(N, S, S, 3)`` images -> ``(N, C)`` probabilities.
        paths: Image files of a labelled part.
        labels: Their class indices.
        input_size: The model's input side.
        classes: Class names in index order.
        sides: Thumbnail sides to try.
        decision_bias: The calibration's decision bias (see :func:`catdog.serving.calibration.answer`).

    Returns:
        Per side (as a string key): images, accuracy, recall per class and,
        when there is an ``Other`` class, accuracy over the cats and dogs alone
        with the share of them answered Other.
    """
    labels = np.asarray(labels, dtype=np.int64)
    other = other_index(classes)
    report = {}
    for side in sides:
        predicted, _ = answer(predict(low_resolution_images(paths, side, input_size)), decision_bias)
        row = {
            "images": int(len(labels)),
            "accuracy": float((predicted == labels).mean()),
            "recall": {
                name: float((predicted[labels == i] == i).mean())
                for i, name in enumerate(classes)
                if (labels == i).any()
            },
        }
        if other is not None:
            pets = labels != other
            row["pets_accuracy"] = float((predicted[pets] == labels[pets]).mean())
            row["pets_answered_other"] = float((predicted[pets] == other).mean())
        report[str(side)] = row
        log.info(
            "%d px: accuracy %.4f (%s)",
            side,
            row["accuracy"],
            ", ".join(f"{k} {v:.3f}" for k, v in row["recall"].items()),
        )
    return report


def synthetic_report(
    predict,
    input_size: int,
    classes: Sequence[str],
    seed: int,
    count: int = 800,
    decision_bias: Sequence[float] | None = None,
) -> dict:
    """The share of generated non-photos answered Other, overall and by kind.

    The pictures are drawn from another seed than the training ones
    (:mod:`catdog.data.synthetic`), so none of them was trained on.

    Args:
        predict: Uint8 ``(N, S, S, 3)`` images -> ``(N, C)`` probabilities.
        input_size: The model's input side.
        classes: Class names in index order (one of them ``Other``).
        seed: The training seed; the pictures use ``seed + 1``.
        count: How many pictures (the kinds take turns).
        decision_bias: The calibration's decision bias (see :func:`catdog.serving.calibration.answer`).
    """
    from catdog.data.synthetic import KINDS, synthetic_images

    images, kinds = synthetic_images(count, input_size, seed + 1)
    answers, _ = answer(predict(images), decision_bias)
    flagged = answers == list(classes).index(OTHER)
    kinds = np.asarray(kinds)
    report = {
        "images": count,
        "flagged": float(flagged.mean()),
        "by_kind": {kind: float(flagged[kinds == kind].mean()) for kind in KINDS},
        "answers": {name: int((answers == i).sum()) for i, name in enumerate(classes)},
    }
    log.info("generated non-photos answered Other: %.4f %s", report["flagged"], report["answers"])
    return report


def evaluate_folder(predictor, dataset_dir: Path, classes: Sequence[str]) -> dict:
    """Validate a folder, then score the model on its valid images.

    The folder holds one sub-folder per class; classes without a folder (a
    folder of cats and dogs only, say) are simply absent from the figures.

    Returns:
        The classification report, plus the validation counts under ``validation_counts``.

    Raises:
        DatasetError: The folder is missing, or holds no class folder.
    """
    from catdog.data.validate import validate_dataset
    from catdog.errors import DatasetError

    present = [name for name in classes if (Path(dataset_dir) / name).is_dir()]
    if not present:
        raise DatasetError(f"{str(dataset_dir)!r} holds none of the class folders {', '.join(classes)}")
    result = validate_dataset(dataset_dir, present, progress=True)
    usable = result.usable_files()
    paths = [result.dataset_dir / rel for name in present for rel in usable[name]]
    labels = [classes.index(name) for name in present for _ in usable[name]]
    report = classification_report(labels, predict_files(predictor, paths), classes, predictor.decision_bias)
    report["validation_counts"] = result.counts()
    return report


def breakdown(
    labels: Sequence[int],
    probabilities: np.ndarray,
    files: Sequence[str],
    classes: Sequence[str],
    dataset_dir: Path,
    source_groups: Mapping[str, str],
    decision_bias: Sequence[float] | None = None,
) -> dict:
    """The figures of one part per source and per group (kind of photo, see :mod:`catdog.data.groups`).

    Args:
        labels: True class indices.
        probabilities: ``(N, num_classes)`` predicted probabilities.
        files: The files, relative to ``dataset_dir``.
        classes: Class names, in index order.
        dataset_dir: The dataset folder (for the collections' ``SOURCES.csv``).
        source_groups: ``data.source_groups`` of the config.
        decision_bias: The calibration's decision bias (see :func:`catdog.serving.calibration.answer`).

    Returns:
        ``{"by_source": ..., "by_group": ...}``, each as :func:`catdog.training.metrics.source_report` gives it.
    """
    groups = file_groups(files, dataset_dir, source_groups)
    return {
        "by_source": source_report(labels, probabilities, [source_of(f) for f in files], classes, decision_bias),
        "by_group": source_report(labels, probabilities, groups, classes, decision_bias),
    }


def format_breakdown(report: dict) -> str:
    """The per-source and per-group tables of a report, for the console."""
    return "\n".join(
        f"per {key[3:]}:\n{format_source_report(report[key], key[3:])}"
        for key in ("by_source", "by_group")
        if key in report
    )


def evaluate_split(
    predictor,
    split_file: Path,
    part: str,
    dataset_dir: Path,
    low_resolution: bool = False,
    source_groups: Mapping[str, str] | None = None,
) -> dict:
    """Score the model on one part of a saved split, overall, per source and per group.

    With ``low_resolution``, also as thumbnails of :data:`LOW_RESOLUTION_SIDES` pixels.
    """
    split = load_split(split_file)
    paths = [dataset_dir / rel for rel in split.files[part]]
    probabilities = predict_files(predictor, paths)
    decision_bias = predictor.decision_bias
    report = classification_report(split.labels[part], probabilities, split.classes, decision_bias)
    report.update(
        breakdown(
            split.labels[part],
            probabilities,
            split.files[part],
            split.classes,
            dataset_dir,
            source_groups or {},
            decision_bias,
        )
    )
    if low_resolution:
        report["low_resolution"] = low_resolution_report(
            lambda images: in_batches(predictor.predict_arrays, images, len(split.classes)),
            paths,
            split.labels[part],
            predictor.input_size,
            split.classes,
            decision_bias=decision_bias,
        )
    return report


def format_low_resolution(report: dict) -> str:
    """The thumbnail figures as a console table."""
    lines = [f"  {'side':>6}{'accuracy':>10}{'pets':>8}{'pets as Other':>15}  recall"]
    for side, row in report.items():
        recall = "  ".join(f"{name} {value:.4f}" for name, value in row["recall"].items())
        pets = f"{row.get('pets_accuracy', float('nan')):>8.4f}{row.get('pets_answered_other', float('nan')):>15.4f}"
        lines.append(f"  {side + ' px':>6}{row['accuracy']:>10.4f}{pets}  {recall}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog evaluate", "Score a saved model on a folder of labelled images.")
    parser.add_argument("--model", type=Path, help="the .h5 model (default: model.path from the config)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="folder with one sub-folder of images per class")
    source.add_argument("--split", choices=("validation", "test"), help="a part of the split saved by training")
    parser.add_argument(
        "--low-resolution",
        action="store_true",
        help="with --split, also score the part as 16-64 px thumbnails (as small uploads arrive)",
    )
    parser.add_argument("--output", type=Path, help="JSON file for the metrics (default: <artifacts>/evaluation.json)")
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)

    from catdog.data.validate import read_manifest
    from catdog.serving.inference import Predictor

    model_path = args.model or Path(settings.model.path)
    predictor = Predictor.from_settings(settings, model_path)
    if args.data:
        name = str(args.data)
        report = evaluate_folder(predictor, args.data, settings.data.classes)
    else:
        name = f"the {args.split} part"
        dataset_dir, _ = read_manifest(paths.manifest(settings.data.artifacts_dir))
        report = evaluate_split(
            predictor,
            paths.split(settings.data.artifacts_dir),
            args.split,
            dataset_dir,
            args.low_resolution,
            settings.data.source_groups,
        )
    report["model"] = {
        "file": str(model_path),
        "architecture": predictor.architecture,
        "sha256_short": predictor.short_hash,
    }
    print(format_report(f"{predictor.architecture} ({model_path.name}) on {name}", report))
    if "by_source" in report:
        print(format_breakdown(report))
    if "low_resolution" in report:
        print("as small thumbnails (shrunk with the app's resize, then preprocessed as an upload):")
        print(format_low_resolution(report["low_resolution"]))
    output = args.output or paths.evaluation(settings.data.artifacts_dir)
    write_json_atomic(output, report)
    print(f"metrics written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
