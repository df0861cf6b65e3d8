"""Install a trained model as the one the app serves: ``python -m catdog.ship``.

``ship MODEL.h5`` copies that model and its ``.metrics.json`` to
``model.path`` (model/model.h5) and ``metrics.json`` beside it. Without a
file, it picks the trained model with the best *validation* accuracy: the
test part stays untouched by every choice, so its number remains honest.

It also converts the model for LiteRT: ``model.tflite`` and its record
``model.tflite.json`` beside ``model.path``, which the app serves without
TensorFlow (see :mod:`catdog.litert`). The conversion is checked on the
validation part of the saved split before anything is installed; if the
twin disagrees with the model, nothing is shipped (``--no-litert`` ships the
``.h5`` alone, and the app serves it with TensorFlow).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from catdog import cli, paths
from catdog.config import Settings
from catdog.dirs import atomic_write
from catdog.errors import ModelError

log = logging.getLogger("catdog.ship")  # not __name__: that is "__main__" under -m


def best_by_validation(model_dir: Path) -> Path:
    """The trained model in ``model_dir`` with the highest validation accuracy.

    Raises:
        ModelError: No trained model with metrics is there.
    """
    scored = []
    for model_file in paths.trained_models_with_metrics(model_dir):
        metrics = json.loads(paths.trained_metrics(model_file).read_text(encoding="utf-8"))
        scored.append((metrics["validation"]["accuracy"], model_file))
    if not scored:
        raise ModelError(f"no trained model with metrics in {str(model_dir)!r}; run catdog.train first")
    for accuracy, model_file in scored:
        log.info("%s: validation accuracy %.4f", model_file.name, accuracy)
    return max(scored)[1]


def ship(model_file: Path, settings: Settings, *, litert: bool = True) -> Path:
    """Copy a trained model and its metrics to ``model.path`` and metrics.json beside it, with its LiteRT twin.

    Each file is copied to a temporary name and renamed, so a running app
    never sees half a file. The twin is converted and checked first, so a
    failed check installs nothing.

    Args:
        model_file: The trained ``.h5``.
        settings: The configuration (``model.path``, ``data.artifacts_dir``).
        litert: Also write ``model.tflite``; without it, an older twin is removed.

    Returns:
        The installed model path.

    Raises:
        ModelError: The model or its metrics file is missing.
        ConversionError: The LiteRT twin disagrees with the model.
    """
    from catdog import litert as lite

    target = Path(settings.model.path)
    metrics_src = paths.trained_metrics(model_file)
    if not model_file.exists() or not metrics_src.exists():
        raise ModelError(f"{model_file} or its metrics file {metrics_src.name} is missing; train it first")
    conversion = lite.convert(model_file, artifacts_dir=settings.data.artifacts_dir) if litert else None
    target.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in ((model_file, target), (metrics_src, paths.shipped_metrics(target))):
        with atomic_write(dst) as tmp:
            shutil.copyfile(src, tmp)
    if conversion is None:
        lite.remove(target)
    else:
        check = conversion.record["check"]
        log.info(
            "wrote %s: max probability difference %.1e on %s",
            lite.write(conversion, target).name,
            check["max_abs_difference"],
            check["source"],
        )
    log.info("shipped %s as %s", model_file, target)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog ship", "Install a trained model as the one the app serves.")
    parser.add_argument(
        "model",
        nargs="?",
        type=Path,
        help="trained .h5 to install (default: the best on the validation part in model.dir)",
    )
    parser.add_argument(
        "--no-litert",
        action="store_true",
        help="ship the .h5 alone, without its model.tflite twin (the app then serves with TensorFlow)",
    )
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)
    chosen = args.model or best_by_validation(Path(settings.model.dir))
    target = ship(chosen, settings, litert=not args.no_litert)
    print(f"{chosen} is now {target}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
