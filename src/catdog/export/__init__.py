"""Export: from a trained model to the release the app serves.

``litert`` converts a Keras model to its float LiteRT twin and checks that the
two agree, ``quantize`` makes and checks the int8 twin, ``release`` installs a
set of files as one release in a single rename, and ``ship`` ties them
together (``catdog ship``), choosing among trained models by their recorded
validation accuracy.

It reads what training recorded (:mod:`catdog.training.results`), and the
serving layer's runtime names the outputs it writes; serving never imports it.
"""
