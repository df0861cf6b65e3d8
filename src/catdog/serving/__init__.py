"""Serving: from an image file to calibrated probabilities and a heatmap, with the shipped model.

``preprocess`` (with ``image_checks``) is the one way an image is opened and
resized, for training and serving alike; ``runtime`` runs the model through
LiteRT or TensorFlow; ``inference`` holds the :class:`Predictor` that ties
them together with the recorded calibration (``calibration``); ``predict``
is its command line (``catdog predict``).

This is the lowest layer of the pipeline: it imports nothing from data
preparation, training or export, and neither TensorFlow nor Keras at import
time (the TensorFlow runtime imports them only when it loads a model), so a
serving-only install runs it.
"""
