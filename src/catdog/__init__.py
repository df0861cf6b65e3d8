"""catdog: tell whether a photo shows a cat, a dog, or neither.

The package is split by pipeline stage, each a subpackage that imports only
the stages below it (pyproject.toml's import-linter contracts check it):
``web`` and ``bulk`` (the app and bulk classification), ``export`` (LiteRT
twins and releases), ``training``, ``data`` (preparation) and ``models`` (the
networks), and ``serving`` (preprocessing, runtimes, the predictor) at the
bottom; config, errors, labels, paths, dirs and cli are shared by all.
Importing the package is cheap: TensorFlow is only imported by the modules
that need it, when they are used.
"""

__version__ = "0.1.0"
