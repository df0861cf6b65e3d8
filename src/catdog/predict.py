"""Classify image files on the console: ``python -m catdog.predict IMAGE...``.

Prints one line per file: its label and probability, or a one-line error
for a file that cannot be read; the other files are still classified. The
exit status is 1 when any file failed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from catdog import cli
from catdog.errors import InvalidImage


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog predict", "Say whether each image shows a cat or a dog.")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files to classify")
    parser.add_argument("--model", type=Path, help="the .h5 model (default: model.path from the config)")
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)

    from catdog.inference import Predictor

    predictor = Predictor.from_settings(settings, args.model)
    failed = 0
    for path, prediction, error in classify_files(predictor, args.images):
        if error:
            failed += 1
            print(f"{path}: error: {error}")
        else:
            others = "  ".join(f"{k} {v:.3f}" for k, v in prediction.probabilities.items())
            print(f"{path}: {prediction.label} ({prediction.confidence:.1%})  [{others}]")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
