"""What every command-line entry point shares: config options, logging and error exits.

Each step is its own module with a ``main(argv)`` (``python -m catdog.training.train``);
``catdog STEP ...`` dispatches to them (:data:`STEPS` names each step's module). Logging is set up here, once, when a
step parses its arguments: ``-v`` shows debug messages of every ``catdog.*``
logger.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from catdog.config import Settings, load_config
from catdog.errors import CatdogError

# Each step, in pipeline order: the module whose ``main`` runs it, and what it does (``catdog --help`` lists them).
STEPS = {
    "ingest": ("catdog.data.ingest", "fetch the dataset archives and unpack them safely"),
    "validate": ("catdog.data.validate", "decode every dataset file and list the usable ones"),
    "train": ("catdog.training.train", "train the configured architecture on the validated manifest"),
    "pack": ("catdog.data.pack", "write training data as a compact pack for a GPU"),
    "train_pack": ("catdog.training.train_pack", "train from a pack for a fixed time (JAX on a GPU)"),
    "evaluate": ("catdog.training.evaluate", "score a saved model on a folder of labelled images"),
    "predict": ("catdog.serving.predict", "say whether each image shows a cat, a dog or neither"),
    "classify": ("catdog.bulk.classify", "classify a whole photo collection into one resumable table"),
    "ship": ("catdog.export.ship", "install a trained model as the one the app serves"),
    "leave_one_out": ("catdog.training.leave_one_out", "estimate Other-flagging on kinds of photo never trained on"),
}


class _StepParser(argparse.ArgumentParser):
    """A parser that sets up logging, honouring ``-v``, once the arguments are parsed."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        configure_logging(parsed.verbose)
        return parsed


def configure_logging(verbose: bool = False) -> None:
    """Log ``catdog.*`` messages to stderr: INFO and up, DEBUG too when ``verbose``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("catdog").setLevel(logging.DEBUG if verbose else logging.INFO)


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Return a step's parser: it knows ``--config``, ``--config-overlay``, ``--set`` and ``-v``; it sets up logging."""
    parser = _StepParser(prog=prog, description=description)
    parser.add_argument(
        "--config", help="YAML config file (default: $CATDOG_CONFIG, else ./config.yaml, else the checkout's)"
    )
    parser.add_argument(
        "--config-overlay",
        dest="overlays",
        action="append",
        metavar="FILE",
        help="YAML file of some config keys merged on top of the config, e.g. config.local-datasets.yaml "
        "(repeatable; default: $CATDOG_CONFIG_OVERLAY)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set training.epochs=3 (repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Load the settings named by ``--config``, ``--config-overlay`` and ``--set``."""
    return load_config(args.config, args.overrides, overlays=args.overlays)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run an entry point; a library error becomes one line on stderr and exit 1."""
    try:
        return main(argv)
    except CatdogError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """``catdog STEP [options]``: run one pipeline step."""
    parser = argparse.ArgumentParser(
        prog="catdog",
        description="The catdog pipeline, one step at a time.",
        epilog="catdog STEP --help shows a step's options.",
    )
    steps = parser.add_subparsers(dest="step", metavar="STEP", required=True)
    for name, (_, summary) in STEPS.items():
        # The step's own parser reads its options (and answers its --help).
        steps.add_parser(name, help=summary, add_help=False)
    args, rest = parser.parse_known_args(argv)
    module = importlib.import_module(STEPS[args.step][0])
    return run(module.main, rest)


if __name__ == "__main__":
    sys.exit(main())
