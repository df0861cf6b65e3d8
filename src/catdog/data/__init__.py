"""Data preparation: from the raw archives to the arrays a network trains on.

``ingest`` fetches and unpacks the archives, ``validate`` decodes every file
and writes the manifest of usable ones, ``dataset`` makes the seeded split
and loads its parts as arrays (``groups`` names the kinds of photo, by
source), ``augment`` and ``synthetic`` add the varied and the generated
pictures, and ``pack`` writes the parts as a compact pack for a GPU.

Raw data is never changed. Images are opened through the serving layer's
preprocessing (:mod:`catdog.serving.preprocess`), so training and serving
see the same pixels; TensorFlow and Keras are imported only by the functions
that build their pipelines.
"""
