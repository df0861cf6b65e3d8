"""int8 twin vs float twin vs a naive ``model.predict`` server, measured in the same run on the same model.

Three servers run side by side under gunicorn (2 workers x 4 threads):

* **naive**: a template-style Flask app that decodes with Pillow and calls
  ``model.predict`` on every request (TensorFlow, float);
* **float**: our app on the float LiteRT twin (``serving.precision: float``);
* **int8**: our app on the int8 twin (``serving.precision: int8``).

For each it measures start -> ready (``/ready`` 200 and both workers' "Worker
ready" line; median of ``--starts`` launches, the paths taking turns),
``POST /predict`` of one 500x375 JPEG at concurrency 1 (median and p95;
requests take turns between the servers, so background load hits all alike),
one request carrying 16 such images (median of ``--batches``), requests per
second at concurrency 8 (median of ``--rounds`` runs, the paths taking turns,
ABBA), and each worker's resident memory after all that. Then, for the float
and int8 twins, how throughput grows: requests per second at concurrency 8
with 1 and 2 workers and 1 and 2 interpreter threads each.

The ratios are what to read on a loaded machine: every path runs under the
same load at the same moments. Prints markdown tables.

Usage::

    python benchmarks/bench_precision.py [--model model/model.h5] [--requests 150]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from bench_predict import p95, post_predict, rss_mib, throughput, typical_jpeg
from bench_runtimes import start_once

from catdog.config import load_config
from catdog.dirs import file_sha256
from catdog.paths import served_model
from catdog.serving.runtime import read_litert_record
from catdog.web.server import GunicornServer

PATHS = ("naive", "float", "int8")
MB = 1_000_000
BATCH = 16

NAIVE_APP = '''"""The way tutorials serve a Keras model: Pillow, then model.predict on every request."""
import os

import keras
import numpy as np
from flask import Flask, jsonify, request
from PIL import Image

model = keras.models.load_model(os.environ["CATDOG__MODEL__PATH"], compile=False)
CLASSES = os.environ["NAIVE_CLASSES"].split(",")
SIZE = model.input_shape[1]
app = Flask(__name__)


@app.get("/ready")
def ready():
    return jsonify({"ready": True})


@app.post("/predict")
def predict():
    images = [Image.open(f.stream).convert("RGB").resize((SIZE, SIZE)) for f in request.files.getlist("file")]
    probabilities = model.predict(np.stack([np.asarray(i, dtype=np.float32) for i in images]), verbose=0)
    answers = [{"label": CLASSES[int(p.argmax())], "confidence": float(p.max())} for p in probabilities]
    return jsonify(answers[0] if len(answers) == 1 else {"predictions": answers})
'''

NAIVE_GUNICORN = """import os
bind = [os.environ["CATDOG_BIND"]]
worker_class = "gthread"
workers = int(os.environ["WEB_CONCURRENCY"])
threads = int(os.environ["GUNICORN_THREADS"])
timeout = 120


def post_worker_init(worker):
    worker.log.info("Worker ready (pid: %s)", worker.pid)
"""


def naive_root(folder: Path) -> Path:
    """A folder holding the naive ``app.py`` and its ``gunicorn.conf.py``."""
    root = folder / "naive"
    root.mkdir()
    (root / "app.py").write_text(NAIVE_APP)
    (root / "gunicorn.conf.py").write_text(NAIVE_GUNICORN)
    return root


def make_server(path: str, model: Path, folder: Path, workers: int, threads: int, litert_threads: int, classes):
    """A gunicorn server of ``path`` (``naive``, ``float`` or ``int8``), not started; its log goes in ``folder``."""
    log = (folder / f"{path}-{time.monotonic_ns()}.log").open("w")
    env = {"GUNICORN_LOGLEVEL": "info", "CATDOG__SERVING__LITERT_THREADS": str(litert_threads)}
    if path == "naive":
        env["NAIVE_CLASSES"] = ",".join(classes)
        return GunicornServer(model, log, workers=workers, threads=threads, env=env, root=folder / "naive")
    env["CATDOG__SERVING__PRECISION"] = path
    return GunicornServer(model, log, workers=workers, threads=threads, env=env)


def post_batch(session: requests.Session, url: str, jpeg: bytes, count: int) -> None:
    files = [("file", (f"photo{i}.jpg", jpeg, "image/jpeg")) for i in range(count)]
    response = session.post(f"{url}/predict", files=files, timeout=120)
    response.raise_for_status()


def timed(call, *args) -> float:
    """Milliseconds ``call(*args)`` took."""
    began = time.perf_counter()
    call(*args)
    return (time.perf_counter() - began) * 1000.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="model/model.h5", type=Path, help="the .h5 model (default: model/model.h5)")
    parser.add_argument("--config", help="YAML config (default: $CATDOG_CONFIG or config.yaml)")
    parser.add_argument("--requests", type=int, default=150, help="timed requests per path at concurrency 1")
    parser.add_argument("--batches", type=int, default=15, help="timed 16-image requests per path")
    parser.add_argument("--starts", type=int, default=2, help="launches per path for start -> ready")
    parser.add_argument("--rounds", type=int, default=4, help="throughput runs per path at concurrency 8 (median)")
    parser.add_argument("--scaling-requests", type=int, default=240, help="requests per run of the scaling table")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    args = parser.parse_args(argv)
    settings = load_config(args.config)
    classes = settings.data.classes
    litert_threads = settings.serving.litert_threads
    model = served_model(args.model)
    for precision in ("float", "int8"):
        found = read_litert_record(model, file_sha256(model), precision)
        if not isinstance(found, tuple):
            raise SystemExit(f"cannot benchmark the {precision} twin: {found}")
    jpeg = typical_jpeg(500, 375)
    concurrency = 8

    with tempfile.TemporaryDirectory(prefix="bench-precision-") as tmp:
        folder = Path(tmp)
        naive_root(folder)
        shutil.copyfile(model, folder / "model.h5")

        def server(path: str, workers: int = 2, threads: int = litert_threads) -> GunicornServer:
            served = folder / "model.h5" if path == "naive" else model
            return make_server(path, served, folder, workers, args.threads, threads, classes)

        starts: dict[str, list[tuple[float, float]]] = {path: [] for path in PATHS}
        for _ in range(args.starts):
            for path in PATHS:
                launched = server(path)
                try:
                    starts[path].append(start_once(launched))
                finally:
                    launched.stop()
                    launched.log.close()

        servers = {path: server(path).start() for path in PATHS}
        try:
            sessions = {path: requests.Session() for path in PATHS}
            for _ in range(10):  # warm every worker
                for path in PATHS:
                    post_predict(sessions[path], servers[path].url, jpeg)
            latency: dict[str, list[float]] = {path: [] for path in PATHS}
            for _ in range(args.requests):
                for path in PATHS:
                    latency[path].append(timed(post_predict, sessions[path], servers[path].url, jpeg))
            batch: dict[str, list[float]] = {path: [] for path in PATHS}
            for _ in range(args.batches):
                for path in PATHS:
                    batch[path].append(timed(post_batch, sessions[path], servers[path].url, jpeg, BATCH))
            rounds: dict[str, list[float]] = {path: [] for path in PATHS}
            total = max(args.requests, 4 * concurrency)
            for round_number in range(args.rounds):
                for path in PATHS if round_number % 2 == 0 else PATHS[::-1]:
                    time.sleep(1.0)
                    rounds[path].append(throughput(servers[path].url, jpeg, total, concurrency))
            rss = {path: [rss_mib(pid) * 2**20 / MB for pid in servers[path].worker_pids()] for path in PATHS}
        finally:
            for launched in servers.values():
                launched.stop()
                launched.log.close()

        scaling: dict[tuple[str, int, int], float] = {}
        for workers in (1, 2):
            for threads in (1, 2):
                for path in ("float", "int8"):
                    launched = server(path, workers, threads).start()
                    try:
                        scaling[path, workers, threads] = throughput(
                            launched.url, jpeg, args.scaling_requests, concurrency
                        )
                    finally:
                        launched.stop()
                        launched.log.close()

    median = {path: statistics.median(latency[path]) for path in PATHS}
    batch_median = {path: statistics.median(batch[path]) for path in PATHS}
    rps = {path: statistics.median(rounds[path]) for path in PATHS}
    ready = {path: statistics.median(s[0] for s in starts[path]) for path in PATHS}
    all_ready = {path: statistics.median(s[1] for s in starts[path]) for path in PATHS}
    print(f"## int8 twin vs float twin vs naive model.predict: one 500x375 JPEG of {len(jpeg) // 1024} KiB")
    print()
    print(
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f} at the end), Python {sys.version.split()[0]}; "
        f"gunicorn 2 workers x {args.threads} threads, interpreter threads {litert_threads}; {args.requests} timed "
        f"requests per path at concurrency 1 (taking turns), {args.batches} requests of {BATCH} images, {total} at "
        f"concurrency {concurrency} (median of {args.rounds} runs, ABBA); start -> ready: median of {args.starts}."
    )
    print()
    print("| | naive model.predict | float twin | int8 twin | int8 / float |")
    print("|---|---:|---:|---:|---:|")

    def row(name: str, values: dict[str, float], fmt: str, ratio: bool = True) -> None:
        cells = " | ".join(format(values[path], fmt) for path in PATHS)
        print(f"| {name} | {cells} | {values['int8'] / values['float']:.2f} |" if ratio else f"| {name} | {cells} | |")

    row("/predict median at c=1, ms", median, ".2f")
    row("/predict p95 at c=1, ms", {path: p95(latency[path]) for path in PATHS}, ".2f")
    row(f"one request of {BATCH} images, median ms", batch_median, ".1f")
    row(f"req/s at c={concurrency}", rps, ".1f")
    row("worker RSS, MB (largest)", {path: max(rss[path]) for path in PATHS}, ".0f")
    row("start -> first /ready 200, s", ready, ".2f")
    row("start -> both workers ready, s", all_ready, ".2f")
    print(
        f"| naive median / our median | | {median['naive'] / median['float']:.1f}x | "
        f"{median['naive'] / median['int8']:.1f}x | |"
    )
    print()
    print(f"Requests/s at concurrency {concurrency}, {args.scaling_requests} requests per cell, one run each:")
    print()
    print("| workers x interpreter threads | float twin | int8 twin | int8 / float |")
    print("|---|---:|---:|---:|")
    for workers in (1, 2):
        for threads in (1, 2):
            f, q = scaling["float", workers, threads], scaling["int8", workers, threads]
            print(f"| {workers} x {threads} | {f:.1f} | {q:.1f} | {q / f:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
