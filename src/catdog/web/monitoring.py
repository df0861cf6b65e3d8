"""Prometheus metrics of the service, exposed at ``GET /metrics``.

Under gunicorn every worker is its own process with its own counters.
``gunicorn.conf.py`` points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh folder
before the workers start; prometheus-client then keeps each worker's values
in a memory-mapped file there, and ``/metrics`` (whichever worker answers)
adds up the files of all workers, dead ones included (folded into one archive
when they exit: :mod:`catdog.web.metrics_files`), so counts survive a worker
restart. Without that variable (the Flask test client, ``flask run``)
the values live in this process only.

What is measured:

* ``catdog_http_requests_total{route, method, status}`` and
  ``catdog_http_request_duration_seconds{route}``: every request, by URL rule
  (``unmatched`` for 404s) and method (``other`` for any but the standard
  ones), so random paths and methods cannot blow up the label set;
* ``catdog_predictions_total{label}`` and ``catdog_top_probability``: the
  answers, the API's and the page's; a shifting top probability is the
  cheapest sign that the traffic no longer looks like the training data;
* ``catdog_images_per_request`` and ``catdog_image_errors_total{code}``;
* ``catdog_model_load_seconds``: how long each live worker took to load and
  warm up its model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

from flask import Flask, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from catdog.serving.inference import Prediction

EXTENSION = "catdog.monitoring"
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
OTHER_METHOD = "other"
# The answer's probability: with three classes at least 1/3 unless a decision bias chose a less probable class
# (rare, near the shifted boundary; the first bucket holds those); finer steps near 1, where most answers fall.
TOP_PROBABILITY_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class Monitor:
    """The metrics of one app.

    Args:
        max_batch: Most images in one request (the last bucket of the images-per-request histogram).
    """

    def __init__(self, max_batch: int):
        # A registry per app: building several apps in one process (tests) registers no name twice.
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "catdog_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "catdog_http_request_duration_seconds", "Time to answer a request, by route", ["route"], registry=r
        )
        self.predictions = Counter("catdog_predictions", "Images classified, by predicted label", ["label"], registry=r)
        self.top_probability = Histogram(
            "catdog_top_probability", "Probability of the predicted label", buckets=TOP_PROBABILITY_BUCKETS, registry=r
        )
        batch_buckets = sorted({1, 2, 4, 8, max_batch} & set(range(1, max_batch + 1)))
        self.images = Histogram(
            "catdog_images_per_request", "Images sent in one /predict request", buckets=batch_buckets, registry=r
        )
        self.image_errors = Counter("catdog_image_errors", "Images refused, by error code", ["code"], registry=r)
        self.model_load = Gauge(
            "catdog_model_load_seconds",
            "Seconds this worker took to load and warm up its model",
            multiprocess_mode="liveall",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format: of every worker when there are several."""
        folder = os.environ.get(MULTIPROCESS_ENV)
        if not folder:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=folder)
        return generate_latest(merged)


def init_app(app: Flask, model_load_seconds: float | None) -> None:
    """Attach a :class:`Monitor` to ``app`` and time every request.

    Args:
        app: The app.
        model_load_seconds: How long loading the model took, or ``None`` if it failed.
    """
    monitor = Monitor(app.config["CATDOG_SETTINGS"].serving.max_batch)
    if model_load_seconds is not None:
        monitor.model_load.set(model_load_seconds)
    app.extensions[EXTENSION] = monitor

    @app.before_request
    def start_timer():
        g.catdog_started = time.perf_counter()

    @app.after_request
    def count_request(response):
        started = g.pop("catdog_started", None)
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        method = request.method if request.method in KNOWN_METHODS else OTHER_METHOD
        monitor.requests.labels(route, method, str(response.status_code)).inc()
        if started is not None:
            monitor.latency.labels(route).observe(time.perf_counter() - started)
        return response


def monitor() -> Monitor:
    """The current app's monitor."""
    return current_app.extensions[EXTENSION]


def record_outcomes(predictions: Sequence[Prediction], error_codes: Sequence[str] = ()) -> None:
    """Count the images of one request: the answers by label and top probability, the refusals by code.

    Args:
        predictions: The predictions made.
        error_codes: The code of each image refused.
    """
    m = monitor()
    for prediction in predictions:
        m.predictions.labels(prediction.label).inc()
        m.top_probability.observe(prediction.confidence)
    for code in error_codes:
        m.image_errors.labels(code).inc()


def record_request_size(images: int) -> None:
    """Count how many images one ``/predict`` request carried."""
    monitor().images.observe(images)
