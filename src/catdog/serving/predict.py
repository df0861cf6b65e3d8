"""Classify image files on the console: ``python -m catdog.serving.predict IMAGE...``.

Prints one line per file: its label and probability, or a one-line error
for a file that cannot be read; the other files are still classified. The
exit status is 1 when any file failed. A photo of neither class reads
``photo.jpg: Neither a cat nor a dog (Other, 91.0%)  [Cat 0.050  Dog 0.040  Other 0.910]``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from catdog import cli
from catdog.errors import InvalidImage
from catdog.labels import describe


def classify_files(predictor, paths: Sequence[Path]) -> list[tuple[Path, object | None, str | None]]:
    """Classify each file on its own, so one bad file does not stop the rest.

    Returns:
        ``(path, prediction, error)`` per file; exactly one of the last two is set.
    """
    results = []
    for path in paths:
        try:
            data = path.read_bytes()
            (prediction,) = predictor.predict_bytes([data])
            results.append((path, prediction, None))
        except InvalidImage as exc:
            results.append((path, None, exc.message))
        except OSError as exc:
            results.append((path, None, f"cannot read the file ({exc.strerror or exc})"))
    return results


def answer_line(prediction, classes: Sequence[str]) -> str:
    """One prediction in words: ``Dog (96.1%)  [Cat 0.039  Dog 0.961]``.

    A label that reads differently in words (``Other``) keeps its class name
    beside the probability, so that scripts can still match it. An answer that is not
    the most probable class ends with the note saying why.
    """
    words = describe(prediction.label, classes)
    named = f"{prediction.label}, " if words != prediction.label else ""
    everything = "  ".join(f"{k} {v:.3f}" for k, v in prediction.probabilities.items())
    note = f"  {prediction.note}" if prediction.note else ""
    return f"{words} ({named}{prediction.confidence:.1%})  [{everything}]{note}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog predict", "Say whether each image shows a cat, a dog or neither.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to classify")
    parser.add_argument("--model", type=Path, help="the .h5 model (default: model.path from the config)")
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)

    from catdog.serving.inference import Predictor

    predictor = Predictor.from_settings(settings, args.model)
    failed = 0
    for path, prediction, error in classify_files(predictor, args.images):
        if error:
            failed += 1
            print(f"{path}: error: {error}")
        else:
            print(f"{path}: {answer_line(prediction, predictor.classes)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
