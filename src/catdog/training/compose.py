"""Models made from trained ones, without training here.

* ``adopt``: a network trained elsewhere from a pack (:mod:`catdog.training.train_pack`),
  rebuilt from its returned weights;
* ``average``: a model and its own fine-tune, blended in weight space;
* ``ensemble``: several models as one that averages their logits
  (:mod:`catdog.models.ensemble`).

Each is scored, calibrated and saved exactly as :func:`catdog.training.train.train`
saves a model it trained (:func:`catdog.training.results.write_results`), so
``catdog.export.ship`` can choose among them all on the validation part. They are
reached through ``catdog.training.train --adopt / --average / --ensemble``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from catdog import paths
from catdog.config import Settings
from catdog.data.dataset import load_arrays, prepare_split
from catdog.dirs import ensure_dirs, file_sha256
from catdog.errors import ModelError
from catdog.training.results import read_metrics, refuse_overwriting_inputs, write_results


def adopt(settings: Settings, run_dir: Path, architecture: str, output: Path | None = None) -> dict:
    """Score and save a network trained elsewhere from a pack (:mod:`catdog.training.train_pack`).

    The run's own training settings (in its record) build the network; the
    scoring, calibration, metrics and plots are those of :func:`train`, on the
    original image files of this checkout's split.

    Args:
        settings: This checkout's settings (data, model folder).
        run_dir: The folder with ``<architecture>.run.json`` and its weights.
        architecture: Which run in ``run_dir``.
        output: Where to write the model (default ``<model.dir>/<arch>.h5``).

    Returns:
        The metrics written beside the model.

    Raises:
        ModelError: The run record is missing, or the run was packed from another split.
    """
    from catdog.models import build_model

    try:
        record = json.loads((run_dir / f"{architecture}.run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the run record of {architecture!r} in {str(run_dir)!r}: {exc}") from exc
    settings = with_recorded_training(settings, record["settings"])
    split, root, manifest_hash = prepare_split(settings)
    if record["pack"]["split_sha256"] != file_sha256(paths.split(settings.data.artifacts_dir)):
        raise ModelError(f"{run_dir} was trained from a pack of another split than this checkout's")
    ensure_dirs(settings)
    arrays = load_arrays(settings, split, root)
    model = build_model(settings.training, len(settings.data.classes))
    model.load_weights(str(run_dir / record["weights_file"]))
    kept = ("wall_time_seconds", "train_images_per_second", "epoch_seconds", "class_weights")
    run = {key: record[key] for key in kept}
    run.update(
        history=record["history"],
        hardware=record["hardware"],
        trained_from_pack={key: record[key] for key in ("pack", "budget_seconds", "epochs_planned", "versions")},
        steady_images_per_second=record["steady_images_per_second"],
    )
    output = Path(output or paths.trained_model(settings.model.dir, architecture))
    return write_results(
        settings, model, run, split, arrays, root, output, {"manifest_sha256": manifest_hash, "initialised_from": None}
    )


# Training settings used when a model is composed and scored, not when it is trained: a composed model is
# made now, so this checkout's values (config.yaml, --set) apply rather than those its members recorded.
SCORING_SETTINGS = ("balance_recall", "max_pets_as_other", "head_refit")


def with_recorded_training(settings: Settings, recorded: dict) -> Settings:
    """``settings`` with the training settings a run recorded (in its run record or metrics).

    The choices made when composing and scoring (:data:`SCORING_SETTINGS`) stay this checkout's.
    """
    from catdog.config import TrainingSettings

    current = {key: getattr(settings.training, key) for key in SCORING_SETTINGS}
    return settings.model_copy(update={"training": TrainingSettings.model_validate({**recorded, **current})})


# What a model's metrics say about how it was trained (kept when models are averaged).
RUN_FACTS = (
    "wall_time_seconds",
    "train_images_per_second",
    "steady_images_per_second",
    "epoch_seconds",
    "class_weights",
    "trained_from_pack",
    "history",
    "hardware",
)


def average(settings: Settings, first: Path, second: Path, share: float, output: Path | None = None) -> dict:
    """Interpolate two trained models in weight space, then score and save the result like :func:`train`.

    Every weight becomes ``(1 - share) * first + share * second``, BatchNorm's
    moving statistics too. A model and its own fine-tune lie in one basin of
    the loss, so the points between them are good models as well (Wortsman et
    al., "Model soups", 2022): choosing ``share`` on the validation part trades
    what the fine-tune learned against what it disturbed.

    The metrics keep the first model's training facts (history, time,
    hardware) and name both models under ``averaged``.

    Raises:
        ModelError: The models differ in architecture or shapes, or a metrics file is missing.
    """
    import keras

    if not 0.0 <= share <= 1.0:
        raise ModelError(f"the share of the second model must be between 0 and 1, got {share}")
    facts = read_metrics(first)
    output = refuse_overwriting_inputs(
        Path(output or paths.trained_model(settings.model.dir, facts["architecture"])), [first, second]
    )
    models = [keras.models.load_model(path, compile=False) for path in (first, second)]
    weights = [model.get_weights() for model in models]
    if [w.shape for w in weights[0]] != [w.shape for w in weights[1]]:
        raise ModelError(f"{first} and {second} do not share an architecture: their weights differ in shape")
    model = models[0]
    model.set_weights([(1.0 - share) * a + share * b for a, b in zip(*weights, strict=True)])
    settings = with_recorded_training(settings, facts["settings"])
    split, root, manifest_hash = prepare_split(settings)
    arrays = load_arrays(settings, split, root)
    run = {key: facts[key] for key in RUN_FACTS if key in facts}
    run["averaged"] = {
        "first": {"file": str(first), "sha256": file_sha256(first)},
        "second": {"file": str(second), "sha256": file_sha256(second)},
        "share_of_second": share,
    }
    return write_results(
        settings, model, run, split, arrays, root, output, {"manifest_sha256": manifest_hash, "initialised_from": None}
    )


def ensemble(settings: Settings, members: Sequence[Path], output: Path | None = None, refit_head: bool = False) -> dict:
    """Combine trained models into one that averages their logits; score and save it like :func:`train`.

    See :mod:`catdog.models.ensemble`. The metrics name each member with its
    own validation accuracy and training facts; the ensemble has no training
    history of its own.

    With ``refit_head``, the averaged heads give way to one Dense head fitted
    over the members' features on the training part (:mod:`catdog.training.head`,
    ``training.head_refit``); the metrics say so under ``head_refit``.

    Raises:
        ModelError: A member is missing its metrics, or the members do not fit together.
    """
    import keras

    from catdog.models.ensemble import build_ensemble

    output = refuse_overwriting_inputs(Path(output or paths.trained_model(settings.model.dir, "ensemble")), members)
    facts_of = [read_metrics(path) for path in members]
    described = [
        {
            "file": str(path),
            "sha256": file_sha256(path),
            "architecture": facts["architecture"],
            "validation_accuracy": facts["validation"]["accuracy"],
            "epochs_run": facts["epochs_run"],
            **{key: facts[key] for key in RUN_FACTS if key in facts and key != "history"},
        }
        for path, facts in zip(members, facts_of, strict=True)
    ]
    try:
        model = build_ensemble([keras.models.load_model(path, compile=False) for path in members])
    except ValueError as exc:
        raise ModelError(f"cannot combine {', '.join(map(str, members))}: {exc}") from exc
    settings = with_recorded_training(settings, facts_of[0]["settings"])
    split, root, manifest_hash = prepare_split(settings)
    arrays = load_arrays(settings, split, root)
    run = {"history": {}, "hardware": described[0].get("hardware"), "members": described}
    if refit_head:
        from catdog.training.head import refit_head as refit

        classes = settings.data.classes
        run["head_refit"] = refit(model, arrays["train"], split.labels["train"], classes, settings.training)
    provenance = {"manifest_sha256": manifest_hash, "initialised_from": None}
    return write_results(settings, model, run, split, arrays, root, output, provenance, architecture="ensemble")
