"""``GET /metrics``: Prometheus metrics, in one process and added up across real gunicorn workers."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from test_web import multipart

from helpers import CLASSES, make_photo
from openapi_check import validate_answer


def sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def metrics_text(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type == CONTENT_TYPE_LATEST
    return response.get_data(as_text=True)


# --- one process: the Flask test client --------------------------------------------------------


def test_requests_are_counted_by_route_method_and_status(client):
    before = metrics_text(client)
    client.get("/health")
    client.get("/health")
    client.get("/no-such-page")
    client.post("/predict", data=b"junk", content_type="image/jpeg")
    after = metrics_text(client)

    def delta(**labels):
        name = "catdog_http_requests_total"
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta(route="/health", method="GET", status="200") == 2
    assert delta(route="unmatched", method="GET", status="404") == 1
    assert delta(route="/predict", method="POST", status="415") == 1
    assert delta(route="/metrics", method="GET", status="200") == 1  # the first scrape
    latency = "catdog_http_request_duration_seconds_count"
    assert sample(after, latency, route="/health") - sample(before, latency, route="/health") == 2


def test_unknown_methods_share_one_label_value(client):
    before = metrics_text(client)
    for number in range(50):
        client.open("/health", method="X" + "".join(chr(65 + (number * 7 + i) % 26) for i in range(19)))
    after = metrics_text(client)
    methods = {
        s.labels["method"]
        for family in text_string_to_metric_families(after)
        for s in family.samples
        if s.name == "catdog_http_requests_total"
    }
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}, methods
    name = "catdog_http_requests_total"
    assert sample(after, name, method="other") - sample(before, name, method="other") == 50


def test_predictions_are_counted_by_label_with_their_top_probability(client):
    before = metrics_text(client)
    photos = [make_photo(seed=seed) for seed in range(3)]
    batch = client.post("/predict", data=multipart(*photos, b"junk"), content_type="multipart/form-data").get_json()
    single = client.post("/predict", data=make_photo(seed=9), content_type="image/jpeg").get_json()
    page = client.post("/", data=multipart(make_photo(seed=4)), content_type="multipart/form-data")
    assert page.status_code == 200
    after = metrics_text(client)
    answers = [item for item in batch["predictions"] if "label" in item] + [single]
    page_label = page.get_data(as_text=True).split('data-label="')[1].split('"')[0]
    labels = [answer["label"] for answer in answers] + [page_label]

    for name in CLASSES:
        counted = sample(after, "catdog_predictions_total", label=name) - sample(
            before, "catdog_predictions_total", label=name
        )
        assert counted == labels.count(name), name
    top = "catdog_top_probability"
    assert sample(after, f"{top}_count") - sample(before, f"{top}_count") == 5
    page_answer = client.post("/predict", data=make_photo(seed=4), content_type="image/jpeg").get_json()
    expected_sum = sum(answer["confidence"] for answer in answers) + page_answer["confidence"]
    assert sample(after, f"{top}_sum") - sample(before, f"{top}_sum") == pytest.approx(expected_sum, abs=0.01)
    images = "catdog_images_per_request"
    assert sample(after, f"{images}_count") - sample(before, f"{images}_count") == 2
    assert sample(after, f"{images}_sum") - sample(before, f"{images}_sum") == 5
    assert sample(after, f"{images}_bucket", le="1.0") - sample(before, f"{images}_bucket", le="1.0") == 1
    errors = "catdog_image_errors_total"
    assert sample(after, errors, code="not_image") - sample(before, errors, code="not_image") == 1


def test_model_load_time_is_reported(client):
    assert 0 < sample(metrics_text(client), "catdog_model_load_seconds") < 600


# --- gunicorn: two workers, one total -------------------------------------------------------


def worker_counts(folder: Path, pid: int, tmp_path: Path) -> str:
    """The metrics of one worker alone: its files, collected in a folder of their own."""
    alone = tmp_path / f"worker-{pid}"
    alone.mkdir(parents=True)
    for path in folder.glob(f"*_{pid}.db"):
        shutil.copy(path, alone / path.name)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(alone))
    return generate_latest(registry).decode()


def test_counts_from_both_gunicorn_workers_add_up(live_server, three_class_model_path, tmp_path):
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"left over from the last run")
    server = live_server(
        model_path=three_class_model_path,
        classes=CLASSES,
        workers=2,
        threads=2,
        env={"PROMETHEUS_MULTIPROC_DIR": str(folder)},
    )
    assert not (folder / "counter_999999.db").exists(), "the last run's metrics were not cleared"
    workers = server.worker_pids()
    assert len(workers) == 2
    photo = base64.b64encode(make_photo()).decode()

    def post(_):
        with requests.Session() as session:
            answer = session.post(f"{server.url}/predict", json={"images": [photo, photo]}, timeout=60)
        assert answer.status_code == 200
        return answer.json()

    # Keep both workers busy until each has answered some requests (the kernel picks who accepts).
    sent = 0
    with ThreadPoolExecutor(8) as pool:
        while sent < 400:
            answers = list(pool.map(post, range(16)))
            sent += len(answers)
            per_worker = {
                pid: sample(worker_counts(folder, pid, tmp_path / str(sent)), "catdog_predictions_total")
                for pid in workers
            }
            if all(per_worker.values()):
                break
    assert all(per_worker.values()), f"one worker answered nothing: {per_worker}"
    label = answers[0]["predictions"][0]["label"]

    text = requests.get(f"{server.url}/metrics", timeout=10).text
    requests_total = sample(text, "catdog_http_requests_total", route="/predict", method="POST", status="200")
    assert requests_total == sent
    assert sample(text, "catdog_predictions_total", label=label) == 2 * sent
    assert sample(text, "catdog_images_per_request_count") == sent
    assert sample(text, "catdog_top_probability_count") == 2 * sent
    # What each worker counted adds up to the total /metrics shows, whichever worker answers it.
    alone = [worker_counts(folder, pid, tmp_path / "final") for pid in workers]
    assert sum(sample(t, "catdog_predictions_total") for t in alone) == 2 * sent
    assert sum(sample(t, "catdog_http_requests_total", route="/predict") for t in alone) == sent
    # One load time per live worker.
    assert load_time_pids(text) == sorted(workers)
    assert sample(text, "catdog_model_load_seconds") > 0
    # The answers of the real server match the document too.
    document = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    validate_answer(document, "/predict", "post", 200, answers[0])


def load_time_pids(text: str) -> list[int]:
    return sorted(
        int(s.labels["pid"])
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "catdog_model_load_seconds"
    )


def test_gunicorn_makes_a_metrics_folder_and_removes_it_on_exit(live_server, tmp_path):
    # No model: the worker starts at once, and /metrics still answers.
    server = live_server(model_path=tmp_path / "missing.h5", ready_path="/health", workers=1, threads=1)
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200 and "catdog_http_requests_total" in response.text
    (first,) = server.worker_pids()
    assert load_time_pids(response.text) == [first]

    # A worker that dies is replaced; child_exit drops its live gauge, its counts stay in the totals.
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (server.worker_pids() and server.worker_pids() != [first]):
        assert time.monotonic() < deadline, "gunicorn did not replace the worker"
        time.sleep(0.1)
    while True:
        try:
            text = requests.get(f"{server.url}/metrics", timeout=10).text
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the new worker does not answer"
            time.sleep(0.1)
    assert load_time_pids(text) == server.worker_pids()
    # The first scrape, counted by the dead worker (a scrape is counted after its own body is written).
    assert sample(text, "catdog_http_requests_total", route="/metrics") == 1
    server.log.flush()
    deadline = time.monotonic() + 10
    while not (found := re.search(r"Workers' metrics in (\S+)", Path(server.log.name).read_text())):
        assert time.monotonic() < deadline, "gunicorn did not log its metrics folder"
        time.sleep(0.1)
    folder = Path(found.group(1))
    assert folder.is_dir() and any(folder.glob("*.db"))
    assert server.stop() == 0
    assert not folder.exists()


def test_a_dead_workers_counts_are_archived_and_its_files_removed(live_server, tmp_path):
    # Workers are replaced every few requests (max_requests 3, no jitter): the folder must not grow.
    folder = tmp_path / "metrics"
    server = live_server(
        model_path=tmp_path / "missing.h5",
        ready_path="/health",
        workers=1,
        threads=1,
        env={"PROMETHEUS_MULTIPROC_DIR": str(folder), "GUNICORN_MAX_REQUESTS": "3"},
    )
    seen, answered = set(), 0
    deadline = time.monotonic() + 120
    while len(seen) < 4:
        assert time.monotonic() < deadline, f"workers were not replaced: {seen}"
        try:
            answered += requests.get(f"{server.url}/health", timeout=10).status_code == 200
        except requests.ConnectionError:
            time.sleep(0.1)
        seen.update(server.worker_pids())
    live = server.worker_pids()
    files = {path.name for path in folder.iterdir()}
    dead_files = {name for name in files if not any(name.endswith(f"_{pid}.db") for pid in live)}
    assert dead_files <= {"counter_archive.db", "histogram_archive.db"}, files
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    assert sample(text, "catdog_http_requests_total", route="/health", status="200") >= answered
