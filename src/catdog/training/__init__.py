"""Training: from the prepared data to a trained, calibrated and scored model.

``train`` fits the configured network (``cpu`` decides on mixed precision),
``train_pack`` trains from a pack on a GPU machine, both in the one training
loop of ``loop`` (optimizer, learning-rate plan, time budget), ``compose`` makes models
from trained ones (adopt, average, ensemble), ``results`` scores a model and
records its metrics and plots (``metrics``, ``plots``), ``evaluate`` scores a
saved model on labelled images, and ``leave_one_out`` (with ``openset``)
estimates how well unseen kinds of photo are flagged as Other.

TensorFlow and Keras are imported inside the functions that need them, so
``catdog --help`` stays fast; nothing below this layer imports it.
"""
