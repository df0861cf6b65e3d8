"""Under load through a real gunicorn (2 workers): the service holds, and answers never cross.

The short bursts use the load tool's client (benchmarks/load.py) against the
shared server; the 10,000-request soak runs the whole tool and is marked slow.
"""

from __future__ import annotations

import base64
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from benchmarks import load
from benchmarks.bench_predict import typical_jpeg
from catdog.config import PROJECT_ROOT
from helpers import make_photo

SHIPPED_MODEL = PROJECT_ROOT / "model" / "model.h5"


@pytest.fixture(scope="module")
def payloads() -> tuple[list[load.Payload], list[load.Payload]]:
    return load.build_payloads(photos=3)


@pytest.mark.parametrize("concurrency", [1, 8, 32])
def test_a_short_burst_of_mixed_traffic_holds(pair_server, payloads, concurrency):
    pids = pair_server.worker_pids()
    good, bad = payloads
    samples, seconds = load.run_level(
        pair_server.url, concurrency, good, bad, bad_share=0.3, max_requests=max(40, 2 * concurrency), max_seconds=90
    )
    summary = load.summarize(samples, seconds)
    assert summary["requests"] >= 40, summary
    assert (summary["server_errors"], summary["connection_errors"], summary["unexpected"]) == (0, 0, 0), summary
    assert summary["bad_requests_sent"] > 0 and summary["max_ms"] < 60_000
    assert {s.kind for s in samples} >= {"multipart", "raw", "json"}
    assert pair_server.worker_pids() == pids


def test_the_load_tool_refuses_other_hosts(payloads):
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        load.run_level("http://example.com", 1, payloads[0], max_requests=1, max_seconds=1)


# --- answers never cross between concurrent requests ---------------------------------


def predict(session: requests.Session, url: str, data: bytes, form: str) -> dict:
    if form == "multipart":
        response = session.post(f"{url}/predict", files={"file": ("photo", data)}, timeout=120)
    elif form == "raw":
        response = session.post(f"{url}/predict", data=data, headers={"Content-Type": "image/jpeg"}, timeout=120)
    else:
        response = session.post(f"{url}/predict", json={"image": base64.b64encode(data).decode()}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_concurrent_answers_match_serial_ones_exactly(pair_server):
    images = [make_photo((96 + 8 * i, 80), ("JPEG", "PNG", "WEBP")[i % 3], seed=i) for i in range(12)]
    images += [typical_jpeg(120 + 16 * i, 90, seed=i) for i in range(12)]
    with requests.Session() as session:
        serial = [predict(session, pair_server.url, data, "raw") for data in images]
    distinct = {tuple(round(p, 5) for p in answer["probabilities"].values()) for answer in serial}
    assert len(distinct) == len(images), "two images got the same answer: a crossed answer could go unseen"

    jobs = [(index, form) for index in range(len(images)) for form in ("multipart", "raw", "json") for _ in range(2)]
    random.Random(5).shuffle(jobs)
    local = threading.local()

    def run(job: tuple[int, str]) -> tuple[int, dict]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        index, form = job
        return index, predict(local.session, pair_server.url, images[index], form)

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(run, jobs))
    assert len(answers) == len(jobs) == 144
    for index, answer in answers:
        expected = serial[index]
        assert answer["label"] == expected["label"], index
        for name, probability in expected["probabilities"].items():
            assert answer["probabilities"][name] == pytest.approx(probability, abs=1e-5), (index, name)


# --- the long form --------------------------------------------------------------------


@pytest.mark.slow
def test_soak_of_10000_requests_meets_the_targets(tiny_model_path: Path, tmp_path: Path, capsys):
    """The whole load tool: levels 1, 8, 32, then 10,000 requests; the shipped model if there is one."""
    model = SHIPPED_MODEL if SHIPPED_MODEL.is_file() else tiny_model_path
    report = tmp_path / "load.json"
    code = load.main(["--model", str(model), "--requests", "500", "--json", str(report)])
    with capsys.disabled():
        print(f"\n{capsys.readouterr().out}")
    assert code == 0, report.read_text()
