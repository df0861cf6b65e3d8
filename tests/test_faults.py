"""Faults through a real gunicorn: a worker killed under load, graceful stop and reload with
requests in flight, and a broken model file at start-up.

SIGKILL and SIGHUP go to the shared 2-worker server, which recovers from
both; SIGTERM goes to a server of its own. A worker logs ``Worker ready (pid:
N)`` (gunicorn.conf.py's ``post_worker_init``) once its model is loaded.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
import requests

from benchmarks.load import build_payloads, run_level
from catdog.web.server import GunicornServer
from helpers import make_photo
from rawhttp import PendingRequest

T = TypeVar("T")


def log_text(server: GunicornServer) -> str:
    server.log.flush()
    return Path(server.log.name).read_text(errors="replace")


def ready_workers(server: GunicornServer) -> set[int]:
    """Workers that have logged that they loaded the model."""
    return {int(pid) for pid in re.findall(r"Worker ready \(pid: (\d+)\)", log_text(server))}


def wait_for(condition: Callable[[], T], timeout: float, what: str) -> T:
    """Poll ``condition`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout:g} s: {what}")


def is_ready(server: GunicornServer) -> bool:
    try:
        return requests.get(f"{server.url}/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def pending_predictions(server: GunicornServer, count: int) -> list[PendingRequest]:
    """``count`` predictions in flight: accepted, headers and half the body read, the workers waiting for the rest."""
    photo = make_photo((160, 120))
    pending = [PendingRequest(server.url, "/predict", photo, "image/jpeg") for _ in range(count)]
    for request in pending:
        request.send(len(photo) // 2)
    wait_for(lambda: all(request.accepted() for request in pending), 10, "the workers accepted the connections")
    time.sleep(0.2)  # and read what was sent
    return pending


def finish(pending: list[PendingRequest]) -> list[tuple[int, dict | None]]:
    for request in pending:
        request.send()
    return [request.response() for request in pending]


def alive(pid: int) -> bool:
    return psutil.pid_exists(pid)


def test_a_killed_worker_is_replaced_while_the_other_one_serves(pair_server, capsys):
    server = pair_server
    wait_for(lambda: ready_workers(server) >= set(server.worker_pids()), 120, "both workers ready")
    victim, survivor = server.worker_pids()
    good, _ = build_payloads(photos=2)
    stop = threading.Event()
    outcome: dict = {}

    def drive() -> None:
        outcome["samples"], _ = run_level(server.url, 8, good, max_requests=10**6, max_seconds=180, stop=stop)

    loader = threading.Thread(target=drive)
    loader.start()
    try:
        time.sleep(1.5)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: is_ready(server), 3, "/ready answers 200 after the kill")
        ready_after = time.monotonic() - killed
        pids = wait_for(lambda: len(p := server.worker_pids()) == 2 and victim not in p and p, 10, "a new worker")
        (replacement,) = set(pids) - {survivor}
        wait_for(lambda: replacement in ready_workers(server), 120, "the new worker loaded its model")
        replaced = time.monotonic()
        time.sleep(1.0)  # load goes on with both workers
    finally:
        stop.set()
        loader.join()

    samples = outcome["samples"]
    failed = [s for s in samples if not s.ok]
    with capsys.disabled():
        print(
            f"\nSIGKILL: {len(samples)} requests, {len(failed)} cut by the kill; "
            f"/ready 200 after {ready_after:.2f} s; replacement serving after {replaced - killed:.1f} s"
        )
    assert all(s.status is None for s in failed), "only connections cut by the kill may fail, never with a 5xx"
    assert len(failed) <= 8, "more requests failed than the killed worker can have held"
    assert all(s.ok for s in samples if s.started > killed + 1.0)
    assert any(s.ok and killed < s.started and s.started + s.seconds < replaced for s in samples)
    assert ready_after < 3.0
    assert server.process.poll() is None and survivor in server.worker_pids()
    assert f"pid:{victim}" in log_text(server).replace(" ", "")  # the master noticed and said so


def test_reload_finishes_requests_in_flight_and_replaces_every_worker(pair_server):
    server = pair_server
    wait_for(lambda: ready_workers(server) >= set(server.worker_pids()), 120, "both workers ready")
    old = set(server.worker_pids())
    pending = pending_predictions(server, 3)
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: len(set(server.worker_pids()) - old) == 2, 10, "two new workers spawned")
    time.sleep(0.5)  # the old workers have been told to stop...
    assert all(alive(pid) for pid in old)  # ...and wait for the requests they hold
    answers = finish(pending)
    assert [status for status, _ in answers] == [200] * 3, answers
    assert all(body["label"] in ("Cat", "Dog") for _, body in answers)

    wait_for(lambda: not any(alive(pid) for pid in old), 15, "the old workers exited")
    new = set(server.worker_pids())
    assert len(new) == 2 and not new & old
    wait_for(lambda: ready_workers(server) >= new, 120, "the new workers loaded their model")
    assert is_ready(server)
    photo = make_photo()
    assert requests.post(f"{server.url}/predict", data=photo, headers={"Content-Type": "image/jpeg"}, timeout=60).ok


def test_sigterm_finishes_requests_in_flight_then_exits_cleanly(live_server):
    server = live_server(workers=1, threads=4)
    pending = pending_predictions(server, 3)
    server.process.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    assert server.process.poll() is None, "gunicorn exited with requests in flight"
    answers = finish(pending)
    assert [status for status, _ in answers] == [200] * 3, answers
    assert server.process.wait(30) == 0
    log = log_text(server)
    assert "Shutting down: Master" in log and "Traceback" not in log


# --- a broken model at start-up: 503 with the reason, no crash loop -----------------------------


def truncated(model: bytes) -> bytes:
    return model[: len(model) // 2]


BROKEN_MODELS = {
    # case: (what to write at the model path, or None for no file; words the message must hold)
    "missing": (None, "was not found"),
    "truncated": (truncated, "truncated"),
    "not hdf5": (lambda model: b"<html>not a model</html>\n", "not an HDF5"),
    "empty": (lambda model: b"", "not an HDF5"),
}


STABLE_FOR = 3.0  # seconds a broken server's worker pids must stay the same


@pytest.fixture(scope="module")
def broken_servers(live_server, tiny_model_path: Path, tmp_path_factory):
    """``case -> (server, its worker pids, when they were read)``: one server per broken model.

    They start together, each waiting only for ``/health``, and stop together.
    """
    folder = tmp_path_factory.mktemp("broken_models")
    model = tiny_model_path.read_bytes()

    def start(case: str) -> tuple[GunicornServer, list[int], float]:
        damage, _ = BROKEN_MODELS[case]
        path = folder / f"{case.replace(' ', '_')}.h5"
        if damage is not None:
            path.write_bytes(damage(model))
        server = live_server(model_path=path, ready_path="/health", workers=1, threads=2)
        wait_for(lambda: ready_workers(server), 120, f"the worker of {case!r} started")
        return server, server.worker_pids(), time.monotonic()

    with ThreadPoolExecutor(len(BROKEN_MODELS)) as pool:
        servers = dict(zip(BROKEN_MODELS, pool.map(start, BROKEN_MODELS), strict=True))
        yield servers
        list(pool.map(lambda entry: entry[0].stop(), servers.values()))


@pytest.mark.parametrize("case", list(BROKEN_MODELS))
def test_a_broken_model_answers_503_with_the_reason_and_never_crash_loops(broken_servers, case):
    server, pids, pids_read = broken_servers[case]
    words = BROKEN_MODELS[case][1]

    ready = requests.get(f"{server.url}/ready", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and words in ready.json()["error"]["message"]
    photo = make_photo()
    answer = requests.post(f"{server.url}/predict", data=photo, headers={"Content-Type": "image/jpeg"}, timeout=10)
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "model_unavailable"
    assert words in error["message"] and "restart" in error["message"]

    time.sleep(max(0.0, pids_read + STABLE_FOR - time.monotonic()))
    assert server.process.poll() is None
    assert server.worker_pids() == pids and len(pids) == 1
    assert log_text(server).count("Booting worker") == 1
