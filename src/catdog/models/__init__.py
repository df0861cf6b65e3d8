"""Our own convolutional networks and the tools to reason about them.

Every network built here follows one contract the rest of the project relies
on: input ``(None, S, S, 3)`` pixels in 0..255 (rescaling is the first layer),
a layer named ``features`` holding the last convolutional stage (Grad-CAM
reads it), and a ``predictions`` layer: ``Dense(len(data.classes), softmax)`` whose index i
is the config's class i. Only built-in Keras layers are used, so a saved
``.h5`` file loads without custom objects. An ensemble of such networks
(:mod:`catdog.models.ensemble`) follows the same contract.
"""

from catdog.models.build import BUILDERS, build_model

__all__ = ["BUILDERS", "build_model"]
