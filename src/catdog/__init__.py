"""catdog: tell whether a photo shows a cat, a dog, or neither.

The package is split into one module per pipeline step (config, ingest,
validate, dataset, models, train, evaluate, predict) plus the inference and
web layers used by the app. Importing the package is cheap: TensorFlow is
only imported by the modules that need it, when they are used.
"""

__version__ = "0.1.0"
