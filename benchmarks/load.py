"""Load and soak the service under gunicorn: does it hold, answer right and keep its memory?

Starts ``gunicorn -c gunicorn.conf.py app:app`` with 2 workers on a free port
of 127.0.0.1 (every request goes there and nowhere else), serving
``--model`` (default: ``$CATDOG__MODEL__PATH`` or ``model/model.h5``). Then
it drives closed-loop load: ``C`` client threads, each with its own
keep-alive connection, send their next request as soon as the previous one
is answered. An untimed warm-up (every worker thread's first requests are
slow), one level per concurrency (1, 8 and 32 by default), then a soak at
concurrency 8. Each level stops at ``--requests`` requests or after
``--duration`` seconds, whichever comes first; the soak at
``--soak-requests`` or ``--soak-duration``.

The traffic mixes the three input forms (multipart, raw body, JSON base64)
of photo-like JPEGs with a share of bad inputs (random bytes, a truncated
JPEG, an empty file, bad base64, a wrong Content-Type, a too-small image),
each with the status it must get.

It reports requests/s, latency percentiles, answers by status, connection
errors, answers with an unexpected status, and each worker's resident
memory (VmRSS) when ready, before the soak and after it, with worker
recycling (``max_requests``) off so that the same workers serve it all. Targets: zero 5xx,
zero connection errors, zero unexpected statuses, no worker restarted, no
request slower than gunicorn's timeout and worker memory growing less than
5% over the soak. Prints markdown tables, writes JSON, and exits 1 when a
target is missed.

Usage (from the repository root)::

    python -m benchmarks.load                  # levels of 1000, then a 10,000-request soak
    python -m benchmarks.load --short          # a burst of a few hundred requests, for CI
    python -m benchmarks.load --requests 500 --duration 60 --soak-requests 2000
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import itertools
import json
import os
import platform
import random
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import requests

from benchmarks.bench_predict import rss_mib, typical_jpeg
from catdog.config import PROJECT_ROOT
from catdog.web.server import GunicornServer

SHORT = {"warmup": 20, "requests": 60, "duration": 30.0, "soak_requests": 300, "soak_duration": 60.0}
MAX_MEMORY_GROWTH = 0.05
PHOTO_SIZES = [(500, 375), (375, 500), (320, 240), (800, 600), (200, 200)]


@dataclasses.dataclass(frozen=True)
class Payload:
    """One prepared request body and the status it must get.

    Attributes:
        kind: What it is (``multipart``, ``raw``, ``json``, or the kind of bad input).
        body: The encoded request body.
        content_type: Its Content-Type header (empty for none).
        expected: The only acceptable HTTP status.
    """

    kind: str
    body: bytes
    content_type: str
    expected: int


@dataclasses.dataclass(frozen=True)
class Sample:
    """The outcome of one request.

    Attributes:
        kind: The payload's kind.
        expected: The status it should have got.
        status: The status it got, or ``None`` for a connection error.
        started: When it was sent (``time.monotonic()``).
        seconds: How long the answer took.
        error: The connection error's type, or a note on a malformed answer.
    """

    kind: str
    expected: int
    status: int | None
    started: float
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        """It got the status it must get, with a well-formed JSON body."""
        return self.status == self.expected and self.error is None


def multipart_body(filename: str, data: bytes) -> tuple[bytes, str]:
    """A multipart/form-data body holding ``data`` in the field ``file``, and its Content-Type."""
    files = {"file": (filename, data, "image/jpeg")}
    prepared = requests.Request("POST", "http://127.0.0.1/", files=files).prepare()
    return prepared.body, prepared.headers["Content-Type"]


def build_payloads(photos: int = 6, seed: int = 0) -> tuple[list[Payload], list[Payload]]:
    """Prepare the traffic: (good requests, bad requests).

    Good: ``photos`` photo-like JPEGs of typical sizes, each as multipart, raw
    body and JSON. Bad: one of each kind of refused input.
    """
    good = []
    for index in range(photos):
        jpeg = typical_jpeg(*PHOTO_SIZES[index % len(PHOTO_SIZES)], seed=seed + index)
        form, form_type = multipart_body(f"photo{index}.jpg", jpeg)
        good += [
            Payload("multipart", form, form_type, 200),
            Payload("raw", jpeg, "image/jpeg", 200),
            Payload("json", json.dumps({"image": base64.b64encode(jpeg).decode()}).encode(), "application/json", 200),
        ]
    jpeg = typical_jpeg(320, 240, seed=seed)
    empty_form, empty_type = multipart_body("empty.jpg", b"")
    bad = [
        Payload("random-bytes", random.Random(seed).randbytes(4096), "application/octet-stream", 415),
        Payload("truncated-jpeg", jpeg[: len(jpeg) // 2], "image/jpeg", 422),
        Payload("empty-file", empty_form, empty_type, 400),
        Payload("bad-base64", b'{"image": "this is not base64!"}', "application/json", 400),
        Payload("wrong-content-type", jpeg, "text/plain", 415),
        Payload("too-small", typical_jpeg(4, 4, seed=seed), "image/jpeg", 422),
    ]
    return good, bad


def send(session: requests.Session, url: str, payload: Payload, timeout: float) -> Sample:
    """POST ``payload`` to ``url``/predict and check the shape of the answer."""
    headers = {"Content-Type": payload.content_type} if payload.content_type else {}
    started = time.monotonic()
    try:
        response = session.post(f"{url}/predict", data=payload.body, headers=headers, timeout=timeout)
        seconds = time.monotonic() - started
    except requests.RequestException as exc:
        return Sample(payload.kind, payload.expected, None, started, time.monotonic() - started, type(exc).__name__)
    return Sample(payload.kind, payload.expected, response.status_code, started, seconds, answer_problem(response))


def answer_problem(response: requests.Response) -> str | None:
    """What is wrong with the body of an answer, or ``None``.

    A 200 carries a label; every other status ``{"error": {"code", "message"}}``.
    """
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    if not isinstance(body, dict):
        return "not a JSON object"
    if response.status_code == 200:
        return None if body.get("label") else "200 without a label"
    error = body.get("error")
    if not (isinstance(error, dict) and error.get("code") and error.get("message")):
        return "error without code and message"
    return None


def run_level(
    url: str,
    concurrency: int,
    good: Sequence[Payload],
    bad: Sequence[Payload] = (),
    *,
    bad_share: float = 0.15,
    max_requests: int,
    max_seconds: float,
    timeout: float = 120.0,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> tuple[list[Sample], float]:
    """Closed-loop load: ``concurrency`` clients, each sending its next request when answered.

    Stops after ``max_requests`` requests, ``max_seconds`` seconds, or when
    ``stop`` is set, whichever comes first.

    Returns:
        The samples and the seconds the level took.
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load goes to 127.0.0.1 only, got {url!r}")
    tickets = itertools.count()  # next() on a count is atomic under the GIL
    deadline = time.monotonic() + max_seconds
    samples: list[Sample] = []

    def client(number: int) -> None:
        rng = random.Random(seed * 10_000 + number)
        with requests.Session() as session:
            while next(tickets) < max_requests and time.monotonic() < deadline and not (stop and stop.is_set()):
                pool = bad if bad and rng.random() < bad_share else good
                samples.append(send(session, url, rng.choice(pool), timeout))

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(concurrency)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return samples, time.monotonic() - started


def summarize(samples: Sequence[Sample], seconds: float) -> dict[str, Any]:
    """Requests/s, latency percentiles (ms) and the count of each outcome."""
    latencies = np.array([s.seconds for s in samples if s.status is not None]) * 1000.0
    by_status: dict[str, int] = {}
    for sample in samples:
        key = str(sample.status) if sample.status is not None else "connection error"
        by_status[key] = by_status.get(key, 0) + 1

    def percentile(q: float) -> float | None:
        return round(float(np.percentile(latencies, q)), 2) if latencies.size else None

    return {
        "requests": len(samples),
        "seconds": round(seconds, 3),
        "requests_per_second": round(len(samples) / seconds, 2) if seconds > 0 else None,
        "p50_ms": percentile(50),
        "p95_ms": percentile(95),
        "p99_ms": percentile(99),
        "max_ms": round(float(latencies.max()), 2) if latencies.size else None,
        "by_status": dict(sorted(by_status.items())),
        "server_errors": sum(1 for s in samples if s.status is not None and s.status >= 500),
        "connection_errors": sum(1 for s in samples if s.status is None),
        "unexpected": sum(1 for s in samples if s.status is not None and not s.ok),
        "bad_requests_sent": sum(1 for s in samples if s.expected != 200),
    }


def worker_memory(server: GunicornServer) -> dict[int, float]:
    """Resident memory (MiB) of each worker, by pid."""
    return {pid: round(rss_mib(pid), 1) for pid in server.worker_pids()}


def memory_growth(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """Relative growth of each worker present at both times."""
    return {pid: round(after[pid] / before[pid] - 1.0, 4) for pid in before if pid in after and before[pid] > 0}


def missed_targets(report: dict[str, Any]) -> list[str]:
    """The targets the run missed, in words."""
    phases = [report["warmup"], *report["levels"], report["soak"]]
    missed = []
    for key, words in (
        ("server_errors", "5xx answers"),
        ("connection_errors", "connection errors"),
        ("unexpected", "answers with an unexpected status or body"),
    ):
        total = sum(phase[key] for phase in phases)
        if total:
            missed.append(f"{total} {words}")
    slowest = max((phase["max_ms"] or 0.0) for phase in phases)
    if slowest >= report["server"]["timeout_s"] * 1000.0:
        missed.append(f"a request took {slowest:.0f} ms, past gunicorn's timeout")
    if report["worker_restarts"]:
        missed.append(f"{report['worker_restarts']} worker(s) restarted")
    for pid, growth in report["memory"]["growth_over_soak"].items():
        if growth >= MAX_MEMORY_GROWTH:
            missed.append(f"worker {pid} memory grew {growth:.1%} over the soak")
    if report["log"]["tracebacks"] or report["log"]["worker_timeouts"]:
        missed.append("the gunicorn log has tracebacks or worker timeouts")
    return missed


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown tables."""
    model, server = report["model"], report["server"]
    lines = [
        f"## Load: {model.get('architecture')} ({model.get('input_size')}px input, {model.get('sha256_short')}), "
        f"{server['workers']} workers x {server['threads']} threads",
        "",
        f"{report['machine']['cpus']} CPUs, load average {report['machine']['load_average_at_start']} at start; "
        f"{report['bad_share']:.0%} bad inputs in the mix; model file {model['path']}",
        "",
        "| phase | concurrency | requests | req/s | p50 ms | p95 ms | p99 ms | max ms | answers by status "
        "| 5xx | conn errors | unexpected |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for phase in [report["warmup"], *report["levels"], report["soak"]]:
        statuses = ", ".join(f"{status}: {count}" for status, count in phase["by_status"].items())
        lines.append(
            f"| {phase['phase']} | {phase['concurrency']} | {phase['requests']} | {phase['requests_per_second']} "
            f"| {phase['p50_ms']} | {phase['p95_ms']} | {phase['p99_ms']} | {phase['max_ms']} | {statuses} "
            f"| {phase['server_errors']} | {phase['connection_errors']} | {phase['unexpected']} |"
        )
    memory = report["memory"]
    lines += [
        "",
        f"| worker pid | RSS when ready (MiB) | RSS before soak | RSS after {report['total_requests']} requests "
        "| growth over soak | growth since ready |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for pid, ready in memory["ready"].items():
        lines.append(
            f"| {pid} | {ready} | {memory['before_soak'].get(pid)} | {memory['after_soak'].get(pid)} "
            f"| {memory['growth_over_soak'].get(pid, float('nan')):.2%} "
            f"| {memory['growth_since_ready'].get(pid, float('nan')):.2%} |"
        )
    lines += ["", f"Targets: {'all met' if not report['missed'] else 'MISSED: ' + '; '.join(report['missed'])}."]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_model = os.environ.get("CATDOG__MODEL__PATH") or str(PROJECT_ROOT / "model" / "model.h5")
    parser.add_argument("--model", default=default_model, help=f"the .h5 model to serve (default: {default_model})")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated levels (default: 1,8,32)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up requests, at concurrency 8 (default: 100)")
    parser.add_argument("--requests", type=int, default=1000, help="requests per level at most (default: 1000)")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds per level at most (default: 120)")
    parser.add_argument("--soak-requests", type=int, default=10_000, help="requests of the soak (default: 10000)")
    parser.add_argument(
        "--soak-duration", type=float, default=1800.0, help="seconds of the soak at most (default: 1800)"
    )
    parser.add_argument("--soak-concurrency", type=int, default=8, help="clients during the soak (default: 8)")
    parser.add_argument("--bad-share", type=float, default=0.15, help="share of bad inputs (default: 0.15)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default: 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default: 4, as gunicorn.conf.py)")
    parser.add_argument("--timeout", type=int, default=60, help="gunicorn's worker timeout, s (default: 60)")
    parser.add_argument(
        "--json",
        type=Path,
        default=PROJECT_ROOT / "artifacts" / "load.json",
        help="where to write the JSON report (default: artifacts/load.json)",
    )
    short = ", ".join(f"--{key.replace('_', '-')} {value:g}" for key, value in SHORT.items())
    parser.add_argument("--short", action="store_true", help=f"a short burst for CI: {short}")
    args = parser.parse_args(argv)
    if args.short:
        for key, value in SHORT.items():
            setattr(args, key, value)
    args.levels = [int(level) for level in args.concurrency.split(",") if level.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    good, bad = build_payloads()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.json.with_suffix(".gunicorn.log")
    # No recycling (gunicorn.conf.py's max_requests): a restarted worker must mean a crash,
    # and memory growth over the soak is only a leak test while the same workers serve it.
    env = {"GUNICORN_TIMEOUT": str(args.timeout), "GUNICORN_MAX_REQUESTS": "0"}
    with (
        log_path.open("w") as log,
        GunicornServer(args.model, log, workers=args.workers, threads=args.threads, env=env) as server,
    ):
        model = requests.get(f"{server.url}/model", timeout=30).json()
        load_average = [round(x, 2) for x in os.getloadavg()]
        pids = server.worker_pids()
        ready = worker_memory(server)

        def phase(name: str, concurrency: int, count: int, seconds: float, seed: int) -> dict[str, Any]:
            samples, took = run_level(
                server.url,
                concurrency,
                good,
                bad,
                bad_share=args.bad_share,
                max_requests=count,
                max_seconds=seconds,
                timeout=args.timeout + 30.0,
                seed=seed,
            )
            summary = {"phase": name, "concurrency": concurrency, **summarize(samples, took)}
            print(
                f"{name}: {summary['requests']} requests, {summary['requests_per_second']} req/s, "
                f"p99 {summary['p99_ms']} ms, {summary['by_status']}",
                file=sys.stderr,
            )
            return summary

        warmup = phase("warm-up", 8, args.warmup, args.duration, seed=99)
        levels = [phase(f"level {c}", c, args.requests, args.duration, seed=c) for c in args.levels]
        before_soak = worker_memory(server)
        soak = phase("soak", args.soak_concurrency, args.soak_requests, args.soak_duration, seed=0)
        after_soak = worker_memory(server)
        restarts = len(set(pids) - set(server.worker_pids()))
    log_text = log_path.read_text(errors="replace")
    report = {
        "model": {
            "path": str(args.model),
            "architecture": model.get("architecture"),
            "input_size": (model.get("input_size") or [None])[0],
            "sha256_short": model.get("sha256_short"),
        },
        "server": {"workers": args.workers, "threads": args.threads, "timeout_s": args.timeout, "log": str(log_path)},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": load_average,
        },
        "bad_share": args.bad_share,
        "warmup": warmup,
        "levels": levels,
        "soak": soak,
        "total_requests": sum(summary["requests"] for summary in [warmup, *levels, soak]),
        "worker_restarts": restarts,
        "memory": {
            "ready": ready,
            "before_soak": before_soak,
            "after_soak": after_soak,
            "growth_over_soak": memory_growth(before_soak, after_soak),
            "growth_since_ready": memory_growth(ready, after_soak),
        },
        "log": {"tracebacks": log_text.count("Traceback"), "worker_timeouts": log_text.count("WORKER TIMEOUT")},
    }
    report["missed"] = missed_targets(report)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))
    print(f"\nJSON report: {args.json}", file=sys.stderr)
    return 1 if report["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
