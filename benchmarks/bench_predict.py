"""How fast does /predict answer, compared with the forward pass and a naive server?

For one typical JPEG (generated, 500x375 by default) it measures, in one run:

* the forward pass alone (the runtime the app picks: LiteRT when model.tflite matches, else ``tf.function``),
  image already decoded;
* decode + forward pass (``Predictor.predict_bytes``: what a request must do);
* our ``POST /predict`` through gunicorn on 127.0.0.1, one request at a time;
* a naive path: decode, then ``model.predict`` per request, as tutorials do;

and reports medians, 95th percentiles and the ratios, then requests per
second at concurrency 8 against 2 workers, and each worker's resident memory.
Targets: ``/predict`` median at most 1.5x decode + forward, and at least 5x
faster than the naive path. Prints a markdown table.

Usage::

    python benchmarks/bench_predict.py [--model model/model.h5] [--requests 200]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import requests
from PIL import Image

from catdog.config import load_config
from catdog.serving.inference import Predictor
from catdog.serving.preprocess import load_image
from catdog.web.server import GunicornServer


def typical_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth shapes and colour gradients with fine grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.005, 0.03), rng.uniform(0.005, 0.03), rng.uniform(0, 6.3)
        channels.append(128 + 90 * np.sin(fx * x + phase) * np.cos(fy * y - phase))
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def time_calls(call: Callable[[], object], count: int, warmup: int) -> list[float]:
    """Milliseconds of ``count`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000.0)
    return times


def p95(times: list[float]) -> float:
    return float(np.percentile(times, 95))


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB."""
    return psutil.Process(pid).memory_info().rss / 2**20


def post_predict(session: requests.Session, url: str, jpeg: bytes) -> None:
    response = session.post(f"{url}/predict", files={"file": ("photo.jpg", jpeg, "image/jpeg")}, timeout=60)
    response.raise_for_status()


def throughput(url: str, jpeg: bytes, total: int, concurrency: int) -> float:
    """Requests per second with ``concurrency`` clients sending ``total`` requests in all."""
    local = threading.local()

    def one(_: int) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        post_predict(local.session, url, jpeg)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency * 2)))  # warm every connection and thread
        started = time.perf_counter()
        list(pool.map(one, range(total)))
        return total / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="model/model.h5", help="the .h5 model (default: model/model.h5)")
    parser.add_argument("--config", help="YAML config (default: $CATDOG_CONFIG or config.yaml)")
    parser.add_argument("--requests", type=int, default=200, help="timed calls per path (default: 200)")
    parser.add_argument("--naive-requests", type=int, help="timed calls of the naive path (default: --requests)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls first (default: 5)")
    parser.add_argument("--size", default="500x375", help="JPEG width x height (default: 500x375)")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for the throughput run (default: 8)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the throughput run (default: 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default: 4)")
    args = parser.parse_args(argv)

    settings = load_config(args.config)
    width, height = (int(side) for side in args.size.lower().split("x"))
    jpeg = typical_jpeg(width, height)
    count, warmup = args.requests, args.warmup
    naive_count = args.naive_requests or count
    predictor = Predictor.from_settings(settings, args.model)
    size = predictor.input_size
    batch = predictor.decode(jpeg)[1][None]
    rows = {
        f"forward pass ({predictor.runtime})": time_calls(lambda: predictor.predict_arrays(batch), count, warmup),
        "decode + forward pass": time_calls(lambda: predictor.predict_bytes([jpeg]), count, warmup),
    }

    import keras

    naive_model = keras.models.load_model(args.model, compile=False)

    def naive() -> None:
        pixels = load_image(jpeg, size)[None].astype(np.float32)
        naive_model.predict(pixels, verbose=0)

    rows["naive: decode + model.predict"] = time_calls(naive, naive_count, warmup)

    with (
        tempfile.TemporaryFile("w+") as log,
        GunicornServer(args.model, log, workers=args.workers, threads=args.threads) as server,
        requests.Session() as session,
    ):
        rows["POST /predict via gunicorn, concurrency 1"] = time_calls(
            lambda: post_predict(session, server.url, jpeg), count, warmup
        )
        rps = throughput(server.url, jpeg, max(count, 4 * args.concurrency), args.concurrency)
        worker_rss = [rss_mib(pid) for pid in server.worker_pids()]

    median = {name: statistics.median(times) for name, times in rows.items()}
    base = median["decode + forward pass"]
    ours = median["POST /predict via gunicorn, concurrency 1"]
    naive_median = median["naive: decode + model.predict"]

    import tensorflow as tf

    print(
        f"## /predict benchmark: {predictor.architecture} ({size}x{size} input, {predictor.short_hash}), "
        f"one {width}x{height} JPEG of {len(jpeg) / 1024:.0f} KiB"
    )
    print()
    print(
        f"{os.cpu_count()} CPUs, TensorFlow {tf.__version__}, Python {sys.version.split()[0]}; "
        f"{count} timed calls per path ({naive_count} naive), {warmup} warm-up calls."
    )
    print()
    print("| path | median ms | p95 ms | median / (decode + forward) |")
    print("|---|---:|---:|---:|")
    for name, times in rows.items():
        print(f"| {name} | {median[name]:.2f} | {p95(times):.2f} | {median[name] / base:.2f}x |")
    print()
    print("| check | value | target |")
    print("|---|---:|---|")
    print(f"| /predict median / (decode + forward) median | {ours / base:.2f}x | at most 1.5x |")
    print(f"| naive median / /predict median | {naive_median / ours:.1f}x | at least 5x |")
    print(
        f"| requests/s, concurrency {args.concurrency}, {args.workers} workers x {args.threads} threads | {rps:.1f} | |"
    )
    for number, rss in enumerate(worker_rss, start=1):
        print(f"| worker {number} resident memory (VmRSS) | {rss:.0f} MiB | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
