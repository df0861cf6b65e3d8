"""What every command-line entry point shares: config options and error exits.

Each step is its own module with a ``main(argv)`` (``python -m catdog.train``);
``catdog STEP ...`` dispatches to them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Callable, Sequence

from catdog.config import Settings, load_config
from catdog.errors import CatdogError

STEPS = ("ingest", "validate", "train", "evaluate", "predict", "ship", "leave_one_out")


def make_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """Return a parser that already knows ``--config`` and ``--set``."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help="YAML config file (default: $CATDOG_CONFIG or config.yaml)")
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
    """Load the settings named by ``--config`` and ``--set``."""
    return load_config(args.config, args.overrides)


def run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run an entry point; a library error becomes one line on stderr and exit 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
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
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STEPS:
        print(f"usage: catdog {{{','.join(STEPS)}}} [options]   (catdog STEP --help for more)", file=sys.stderr)
        return 2
    module = importlib.import_module(f"catdog.{argv[0]}")
    return run(module.main, argv[1:])


if __name__ == "__main__":
    sys.exit(main())
