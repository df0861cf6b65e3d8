"""Install a trained model as the one the app serves: ``python -m catdog.export.ship``.

``ship MODEL.h5`` installs that model with its ``.metrics.json`` as a new
release, ``releases/<name>/model.h5`` and ``metrics.json`` beside it, and
points ``model.path`` (model/model.h5, a link) at it in one rename (see
:mod:`catdog.export.release`). Without a file, it picks the trained model with the
best *validation* accuracy: the test part stays untouched by every choice,
so its number remains honest.

The release also holds the model's LiteRT twins, which the app serves
without TensorFlow: ``model.tflite`` (float, see :mod:`catdog.export.litert`) and
``model.int8.tflite`` (see :mod:`catdog.export.quantize`), each with its record.
The float conversion is checked on the validation part of the saved split
before anything is installed; if that twin disagrees with the model,
nothing is shipped (``--no-litert`` ships the ``.h5`` alone, and the app
serves it with TensorFlow). An int8 twin that fails its own check is left
out, and the float twin serves.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from catdog import cli, paths
from catdog.config import Settings
from catdog.dirs import file_sha256
from catdog.errors import ModelError
from catdog.export import release
from catdog.serving.inference import calibration_of
from catdog.training.results import read_metrics

log = logging.getLogger("catdog.export.ship")  # not __name__: that is "__main__" under -m


def best_by_validation(model_dir: Path) -> Path:
    """The trained model in ``model_dir`` with the highest validation accuracy.

    Raises:
        ModelError: No trained model with metrics is there.
    """
    scored = []
    for model_file in paths.trained_models_with_metrics(model_dir):
        metrics = read_metrics(model_file)
        try:
            scored.append((float(metrics["validation"]["accuracy"]), model_file))
        except (KeyError, TypeError, ValueError) as exc:
            where = paths.trained_metrics(model_file)
            raise ModelError(f"{where} holds no validation accuracy; score the model again") from exc
    if not scored:
        raise ModelError(f"no trained model with metrics in {str(model_dir)!r}; run catdog.training.train first")
    for accuracy, model_file in scored:
        log.info("%s: validation accuracy %.4f", model_file.name, accuracy)
    return max(scored)[1]


def ship(model_file: Path, settings: Settings, *, litert: bool = True) -> Path:
    """Install a trained model, its metrics and its LiteRT twins as one release that ``model.path`` links to.

    The float twin is converted and checked first, so a failed check installs
    nothing; the int8 twin is quantized and checked next, and one that fails
    its check is left out (its record says why) while the rest ships. Then
    everything is written to a new release folder and ``model.path`` is
    pointed at it in one rename (:mod:`catdog.export.release`): a running app, or
    one starting, sees the old model or the new one, never a mix.

    Args:
        model_file: The trained ``.h5``.
        settings: The configuration (``model.path``, ``data.artifacts_dir``).
        litert: Also write the twins (``model.tflite``, ``model.int8.tflite``).

    Returns:
        ``model.path``.

    Raises:
        ModelError: The model or its metrics file is missing, or its calibration is unreadable.
        ConversionError: The float LiteRT twin disagrees with the model.
    """
    from catdog.export import litert as lite
    from catdog.export import quantize

    target = Path(settings.model.path)
    metrics_src = paths.trained_metrics(model_file)
    if not model_file.exists() or not metrics_src.exists():
        raise ModelError(f"{model_file} or its metrics file {metrics_src.name} is missing; train it first")
    metrics = read_metrics(model_file)  # a damaged file stops the ship here, before any conversion
    files: dict[str, Path | bytes] = {target.name: model_file, paths.shipped_metrics(target).name: metrics_src}
    if litert:
        conversion = lite.convert(model_file, artifacts_dir=settings.data.artifacts_dir)
        log.info(
            "float twin: max probability difference %.1e on %s",
            conversion.record["check"]["max_abs_difference"],
            conversion.record["check"]["source"],
        )
        temperature, class_bias, decision_bias = calibration_of(
            metrics,
            file_sha256(model_file),
            metrics_src,
            len(settings.data.classes),
        )
        quantized = quantize.quantize(
            model_file,
            artifacts_dir=settings.data.artifacts_dir,
            temperature=temperature,
            class_bias=class_bias,
            decision_bias=decision_bias,
        )
        files.update(conversion.files(target.name))
        files.update(quantized.files(target.name))
    folder = release.install(target, files)
    log.info("shipped %s as %s (release %s)", model_file, target, folder.name)
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
        help="ship the .h5 alone, without its LiteRT twins (the app then serves with TensorFlow)",
    )
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)
    chosen = args.model or best_by_validation(Path(settings.model.dir))
    target = ship(chosen, settings, litert=not args.no_litert)
    print(f"{chosen} is now {target}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
