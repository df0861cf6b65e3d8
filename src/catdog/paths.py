"""Where every artifact lives, named once.

Folders come from the settings (``data.artifacts_dir``, ``model.dir``,
``model.path``); the file names inside them are spelled here and nowhere else::

    <artifacts_dir>/manifest.json            catdog validate: the usable files per class
    <artifacts_dir>/validation_report.json   catdog validate: counts and every bad file
    <artifacts_dir>/split.json               catdog train: the seeded train/validation/test split
    <artifacts_dir>/cache/                   decoded image arrays
    <artifacts_dir>/runs/<arch>/             checkpoints, epoch backup, history.csv
    <artifacts_dir>/evaluation.json          catdog evaluate
    <model.dir>/<arch>.h5                    catdog train, with <arch>.metrics.json and <arch>_*.png plots
    <model.dir>/leave_one_group_out.json     catdog leave_one_out
    <model.path> (model.h5)                  catdog ship: a link to the release the app serves,
    <model.path's folder>/releases/<name>/   one folder per shipped model: model.h5, metrics.json,
                                             model.tflite, model.int8.tflite and their records (.json)

``model.dir`` (``artifacts/models``) is where training writes; ``catdog ship``
copies the model it installs into a release, so ``model/`` holds only what is
served and the member networks it was made from. Older models left the tree:
:func:`require_model` names the ``git show`` command that restores one.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from catdog.errors import ModelError

PathLike = str | os.PathLike


def manifest(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / "manifest.json"


def validation_report(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / "validation_report.json"


def split(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / "split.json"


def cache_dir(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / "cache"


def run_dir(artifacts_dir: PathLike, architecture: str) -> Path:
    return Path(artifacts_dir) / "runs" / architecture


def evaluation(artifacts_dir: PathLike) -> Path:
    return Path(artifacts_dir) / "evaluation.json"


def trained_model(model_dir: PathLike, architecture: str) -> Path:
    return Path(model_dir) / f"{architecture}.h5"


def trained_metrics(model_file: PathLike) -> Path:
    """``inception.h5`` -> ``inception.metrics.json``."""
    return Path(model_file).with_suffix(".metrics.json")


def trained_models_with_metrics(model_dir: PathLike) -> list[Path]:
    """The ``.h5`` files in ``model_dir`` that have a metrics file beside them, sorted."""
    found = (
        path.with_name(path.name.removesuffix(".metrics.json") + ".h5")
        for path in sorted(Path(model_dir).glob("*.metrics.json"))
    )
    return [path for path in found if path.exists()]


def plot(model_file: PathLike, kind: str) -> Path:
    """A training plot beside the model: ``kind`` is ``curves``, ``confusion`` or ``reliability``."""
    model_file = Path(model_file)
    return model_file.with_name(f"{model_file.stem}_{kind}.png")


def served_model(model_path: PathLike) -> Path:
    """The file ``model.path`` names, its link followed: the shipped release's ``.h5``, its companions beside it.

    Following the link once, then reading every companion beside the file it
    leads to, is what makes a ship atomic for a reader (see :mod:`catdog.export.release`).
    A plain file is its own answer.
    """
    return Path(model_path).resolve()


def releases_dir(model_path: PathLike) -> Path:
    """The folder of shipped releases, beside ``model.path``."""
    return Path(model_path).parent / "releases"


def shipped_metrics(model_path: PathLike) -> Path:
    """The metrics the app reads, beside the model file."""
    return Path(model_path).with_name("metrics.json")


def litert_paths(model_path: PathLike, precision: str = "float") -> tuple[Path, Path]:
    """A LiteRT twin of a ``.h5`` model and its record.

    ``model.tflite`` and ``model.tflite.json`` for the float twin,
    ``model.int8.tflite`` and ``model.int8.tflite.json`` for the int8 one.
    """
    model_path = Path(model_path)
    tflite = model_path.with_suffix(".tflite" if precision == "float" else f".{precision}.tflite")
    return tflite, tflite.with_name(tflite.name + ".json")


def leave_one_out(model_dir: PathLike) -> Path:
    return Path(model_dir) / "leave_one_group_out.json"


# Models that left model/ are kept in git history: the last commit that holds each folder of them.
# model/v1/ held the v1 Cat/Dog networks (inception.h5, resnet.h5 and their .metrics.json), where the first
# three-class fine-tunes and the leave-one-source-out protocol started.
OLDER_MODELS = {"v1": "23bbf1d54cfd"}


def restore_command(folder: str, name: str, destination: PathLike) -> str:
    """The shell command that writes ``model/<folder>/<name>`` from git history to ``destination``."""
    destination = Path(destination)
    return (
        f"mkdir -p {shlex.quote(str(destination.parent))} && "
        f"git show {OLDER_MODELS[folder]}:model/{folder}/{name} > {shlex.quote(str(destination))}"
    )


def require_model(model_file: PathLike) -> Path:
    """``model_file``, a model a step reads, checked to exist.

    Raises:
        ModelError: It is missing. When its folder is named like an older
            model's (``v1/inception.h5``), the message gives the command that
            restores that file there from git history.
    """
    model_file = Path(model_file)
    if model_file.is_file():
        return model_file
    message = f"no model file {str(model_file)!r}"
    folder = model_file.parent.name
    if folder in OLDER_MODELS:
        message += (
            f"; the {folder} models are kept in git history, not in model/: restore this one with "
            f"{restore_command(folder, model_file.name, model_file)}"
        )
    raise ModelError(message)
