"""TensorFlow path vs LiteRT path, measured in the same run on the same model.

Two copies of the model are served by gunicorn (2 workers x 4 threads, as
shipped): one folder holds ``model.h5`` alone (TensorFlow), the other also its
checked ``model.tflite`` twin (LiteRT). For each path it measures:

* start -> ready: from launching gunicorn until ``/ready`` answers 200, and
  until both workers have loaded their model (their "Worker ready" log line);
  the median of ``--starts`` launches, the two paths taking turns;
* ``POST /predict`` latency at concurrency 1 (median and p95), one typical
  500x375 JPEG; requests alternate between the two servers, so background
  load hits both alike;
* requests per second at concurrency 8 (median of ``--rounds`` runs, the paths taking turns in ABBA order);
* each worker's resident memory (VmRSS) after all that;

and whether both runtimes give the same label to 1,000 generated images.
Targets: RSS <= 150 MB, start -> ready <= 3 s, median at least 1.5x
faster, identical labels. Prints a markdown table.

Usage::

    python benchmarks/bench_runtimes.py [--model model/model.h5] [--requests 200]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from bench_predict import p95, post_predict, rss_mib, throughput, typical_jpeg

from catdog.config import load_config
from catdog.dirs import file_sha256
from catdog.export import litert
from catdog.paths import litert_paths, served_model
from catdog.serving.inference import Predictor
from catdog.serving.runtime import read_litert_record
from catdog.web.server import GunicornServer

PATHS = ("tensorflow", "litert")
MB = 1_000_000


def prepare(model: Path, folder: Path, artifacts_dir: str) -> dict[str, Path]:
    """One folder per path: ``model.h5`` (+ ``metrics.json``) alone, and with its LiteRT twin."""
    served = {}
    for name in PATHS:
        target = folder / name / "model.h5"
        target.parent.mkdir(parents=True)
        shutil.copyfile(model, target)
        if model.with_name("metrics.json").exists():
            shutil.copyfile(model.with_name("metrics.json"), target.with_name("metrics.json"))
        served[name] = target
    if isinstance(read_litert_record(model, file_sha256(model)), tuple):
        for path in litert_paths(model):
            shutil.copyfile(path, served["litert"].parent / path.name)
    else:
        print(f"{model.name} has no matching twin: converting it", file=sys.stderr)
        litert.write(litert.convert(served["litert"], artifacts_dir=artifacts_dir), served["litert"])
    return served


def start_once(server: GunicornServer, timeout: float = 180.0) -> tuple[float, float]:
    """Launch ``server``; return seconds until ``/ready`` is 200 and until both workers are ready."""
    log = Path(server.log.name)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
    started = time.perf_counter()
    server.process = subprocess.Popen(
        command, cwd=server.root, env=server.env, stdout=server.log, stderr=subprocess.STDOUT
    )
    ready = all_ready = None
    while ready is None or all_ready is None:
        if server.process.poll() is not None or time.perf_counter() - started > timeout:
            raise RuntimeError(f"gunicorn did not start:\n{log.read_text()}")
        if ready is None:
            try:
                # Once the master listens, a request waits in its queue until a worker takes it.
                if requests.get(f"{server.url}/ready", timeout=timeout).status_code == 200:
                    ready = time.perf_counter() - started
            except requests.ConnectionError:
                pass
        if all_ready is None and log.read_text().count("Worker ready") >= int(server.env["WEB_CONCURRENCY"]):
            all_ready = time.perf_counter() - started
        time.sleep(0.01)
    return ready, all_ready


def new_server(model: Path, folder: Path, name: str, workers: int, threads: int) -> GunicornServer:
    log = (folder / f"{name}-{time.monotonic_ns()}.log").open("w")
    return GunicornServer(model, log, workers=workers, threads=threads, env={"GUNICORN_LOGLEVEL": "info"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="model/model.h5", type=Path, help="the .h5 model (default: model/model.h5)")
    parser.add_argument("--config", help="YAML config (default: $CATDOG_CONFIG or config.yaml)")
    parser.add_argument("--requests", type=int, default=200, help="timed requests per path at concurrency 1")
    parser.add_argument("--starts", type=int, default=3, help="launches per path for start -> ready (default: 3)")
    parser.add_argument("--images", type=int, default=1000, help="generated images whose labels must agree")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6, help="throughput runs per path, taking turns (median)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)
    settings = load_config(args.config)
    classes = settings.data.classes
    jpeg = typical_jpeg(500, 375)

    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as tmp:
        folder = Path(tmp)
        served = prepare(served_model(args.model), folder, settings.data.artifacts_dir)

        # Labels: both runtimes in this process, on the same generated images.
        predictors = {name: Predictor(served[name], classes, runtime=name) for name in PATHS}
        size = predictors["litert"].input_size
        images = litert.generated_images(args.images, size, seed=2024)
        probabilities = {
            name: np.concatenate([p.predict_arrays(images[i : i + 50]) for i in range(0, len(images), 50)])
            for name, p in predictors.items()
        }
        answers = {name: p.answer(probabilities[name])[0] for name, p in predictors.items()}  # as served
        same_labels = int((answers["tensorflow"] == answers["litert"]).sum())
        largest_difference = float(np.abs(probabilities["tensorflow"] - probabilities["litert"]).max())
        architecture = predictors["litert"].architecture
        del predictors

        starts: dict[str, list[tuple[float, float]]] = {name: [] for name in PATHS}
        for _ in range(args.starts):
            for name in PATHS:
                server = new_server(served[name], folder, name, args.workers, args.threads)
                try:
                    starts[name].append(start_once(server))
                finally:
                    server.stop()
                    server.log.close()

        servers = {name: new_server(served[name], folder, name, args.workers, args.threads).start() for name in PATHS}
        try:
            latency: dict[str, list[float]] = {name: [] for name in PATHS}
            sessions = {name: requests.Session() for name in PATHS}
            for _ in range(10):  # warm every worker
                for name in PATHS:
                    post_predict(sessions[name], servers[name].url, jpeg)
            for _ in range(args.requests):
                for name in PATHS:
                    began = time.perf_counter()
                    post_predict(sessions[name], servers[name].url, jpeg)
                    latency[name].append((time.perf_counter() - began) * 1000.0)
            total = max(args.requests, 4 * args.concurrency)
            rounds: dict[str, list[float]] = {name: [] for name in PATHS}
            for round_number in range(args.rounds):
                # ABBA order and a pause: neither path always runs right after the other's busy threads.
                for name in PATHS if round_number % 2 == 0 else PATHS[::-1]:
                    time.sleep(1.0)
                    rounds[name].append(throughput(servers[name].url, jpeg, total, args.concurrency))
            rps = {name: statistics.median(rounds[name]) for name in PATHS}
            rss = {name: [rss_mib(pid) * 1024 * 1024 / MB for pid in servers[name].worker_pids()] for name in PATHS}
        finally:
            for server in servers.values():
                server.stop()
                server.log.close()

    median = {name: statistics.median(latency[name]) for name in PATHS}
    ready = {name: statistics.median(s[0] for s in starts[name]) for name in PATHS}
    all_ready = {name: statistics.median(s[1] for s in starts[name]) for name in PATHS}
    load = os.getloadavg()[0]
    print(f"## TensorFlow vs LiteRT: {architecture} ({size}x{size} input), one 500x375 JPEG of {len(jpeg) // 1024} KiB")
    print()
    print(
        f"{os.cpu_count()} CPUs (load average {load:.1f} at the end), Python {sys.version.split()[0]}; gunicorn "
        f"{args.workers} workers x {args.threads} threads; {args.requests} timed requests per path at concurrency 1 "
        f"(alternating), {total} at concurrency {args.concurrency} (median of {args.rounds} runs, alternating); "
        f"start -> ready: median of {args.starts} launches."
    )
    print()
    print("| | TensorFlow (model.h5) | LiteRT (model.tflite) | target |")
    print("|---|---:|---:|---|")
    print(
        f"| worker RSS, MB | {' / '.join(f'{r:.0f}' for r in rss['tensorflow'])} | "
        f"{' / '.join(f'{r:.0f}' for r in rss['litert'])} | LiteRT <= 150 |"
    )
    print(f"| start -> first /ready 200, s | {ready['tensorflow']:.2f} | {ready['litert']:.2f} | |")
    print(
        f"| start -> both workers ready, s | {all_ready['tensorflow']:.2f} | {all_ready['litert']:.2f} | LiteRT <= 3 |"
    )
    print(
        f"| /predict median at c=1, ms | {median['tensorflow']:.2f} | {median['litert']:.2f} | "
        f"LiteRT >= 1.5x faster: {median['tensorflow'] / median['litert']:.2f}x |"
    )
    print(f"| /predict p95 at c=1, ms | {p95(latency['tensorflow']):.2f} | {p95(latency['litert']):.2f} | |")
    print(f"| req/s at c={args.concurrency} | {rps['tensorflow']:.1f} | {rps['litert']:.1f} | |")
    print(
        f"| same label on {args.images} generated images | {same_labels} / {args.images} | "
        f"(largest probability difference {largest_difference:.1e}) | all |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
