"""Workers take turns being replaced after max_requests: the gate's rule, and a real server under steady load."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import requests

from catdog.web.recycling import RecycleGate


def test_a_worker_may_leave_only_when_no_other_left_recently(tmp_path: Path):
    first, second = RecycleGate(tmp_path / "gate", spacing=5.0), RecycleGate(tmp_path / "gate", spacing=5.0)
    assert first.may_leave(now=1000.0) == (True, float("inf"))
    # The other worker, two seconds later: refused, told how long ago the first left, and nothing recorded.
    assert second.may_leave(now=1002.0) == (False, 2.0)
    assert second.may_leave(now=1004.5) == (False, 4.5)
    assert second.may_leave(now=1005.0) == (True, 5.0)
    assert first.may_leave(now=1006.0) == (False, 1.0)


def test_a_clock_set_back_does_not_block_every_worker(tmp_path: Path):
    gate = RecycleGate(tmp_path / "gate", spacing=5.0)
    assert gate.may_leave(now=1000.0)[0]
    assert gate.may_leave(now=900.0)[0]


def test_the_gate_comes_from_the_environment(tmp_path: Path):
    assert RecycleGate.from_env({}) is None
    gate = RecycleGate.from_env({"CATDOG_RECYCLE_GATE": str(tmp_path / "g"), "GUNICORN_RECYCLE_SPACING": "2"})
    assert gate is not None and gate.spacing == 2.0 and gate.path == str(tmp_path / "g")


def _ask(path: str, now: float, results) -> None:
    results.put(RecycleGate(path, spacing=5.0).may_leave(now=now)[0])


def test_workers_asking_at_once_let_exactly_one_go(tmp_path: Path):
    path = str(tmp_path / "gate")
    results = multiprocessing.get_context("fork").Queue()
    askers = [multiprocessing.get_context("fork").Process(target=_ask, args=(path, 1000.0, results)) for _ in range(6)]
    for process in askers:
        process.start()
    for process in askers:
        process.join(10)
    assert sorted(results.get(timeout=5) for _ in askers) == [False] * 5 + [True]


def test_under_steady_load_workers_are_replaced_one_at_a_time(live_server, tmp_path: Path):
    # Every 4 requests a worker would leave (no jitter at this count); the gate spaces the departures 2 s apart.
    server = live_server(
        model_path=tmp_path / "missing.h5",
        ready_path="/health",
        workers=2,
        threads=2,
        env={"GUNICORN_MAX_REQUESTS": "4", "GUNICORN_RECYCLE_SPACING": "2"},
    )
    seen: dict[int, float] = {pid: 0.0 for pid in server.worker_pids()}
    start = time.monotonic()
    answered = failed = 0
    while time.monotonic() - start < 9:
        try:
            answered += requests.get(f"{server.url}/health", timeout=10).status_code == 200
        except requests.ConnectionError:
            failed += 1
        for pid in server.worker_pids():
            seen.setdefault(pid, time.monotonic() - start)
    arrivals = sorted(t for t in seen.values() if t > 0)
    assert len(arrivals) >= 2, f"workers were not replaced at all: {seen}"
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # Without the gate both workers leave every few requests, tens of times a second.
    assert min(gaps) > 1.0, f"replacements came {gaps} s apart"
    assert answered > 50 and failed == 0
    log = Path(server.log.name).read_text()
    assert "Restart postponed: another worker left" in log
