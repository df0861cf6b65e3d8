"""Hostile load: slow clients, decode bombs and memory-hungry requests against the real server.

Starts ``gunicorn -c gunicorn.conf.py app:app`` (2 workers x 4 threads, as
shipped) on a free port of 127.0.0.1 serving ``--model``, and measures what
one attacker with a laptop can do to it:

* **slow clients**: ``--clients`` connections trickle their request (the
  head, a body of known length or a chunked body, a third each) one byte
  every ``--interval`` seconds for ``--duration`` seconds, each cut-off one
  reopened at once; meanwhile another client sends ``GET /health`` and a small ``POST /predict`` in turn.
  Reports the connections held, how long the server let a trickling one live
  and the probes' latencies (target: every probe under 2 s);
* **scan bomb**: the CPU time ``preprocess.open_image`` takes on the worst
  progressive JPEG it accepts (8000x5000, ``MAX_JPEG_SCANS`` scans) and to
  refuse one with thousands of scans (target: 1 s);
* **memory**: the rise of a worker's peak resident memory (VmHWM, reset
  before each request) over its idle size, for the worst requests within the limits: 16-bit,
  RGBA and palette PNGs of 8000x5000 pixels with ``explain=1``, and a batch
  of two of them plus small ones (target: 300 MB);
* **connection attacks**, each alone on a fresh server while ``/health`` is
  probed every quarter second (target: every probe under 2 s): chunk sizes
  like ``-6``, 1,100-byte chunk-size lines then silence, clients that
  pipeline 14 ``POST /predict?explain=1`` and never read, 2,100 idle
  connections (past the 2 x 1,000 slots), 13.7 MB bodies parked unfinished;
* **hostile requests**: each file of the decode-bomb corpus
  (:mod:`benchmarks.decode_bombs`; target: 1 s of CPU and 300 MB), a 14 MB
  JSON list of zeros, and 2,000 requests with random 20-letter methods
  (the growth of ``/metrics``).

Prints a markdown table, writes JSON with ``--json``, exits 1 when a target is missed.
``--root`` serves another checkout (its ``src/`` first on the path), to
measure an older version with the same attacks.

Usage (from the repository root)::

    python -m benchmarks.hostile                    # everything, one minute of 64 slow clients
    python -m benchmarks.hostile --duration 20      # shorter
    python -m benchmarks.hostile --parts attacks requests
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import requests
from PIL import Image

from catdog.config import PROJECT_ROOT
from catdog.serving.image_checks import MAX_JPEG_SCANS, jpeg_scan_count
from catdog.serving.preprocess import open_image
from catdog.web.server import GunicornServer

PROBE_LIMIT_S = 2.0
MEMORY_LIMIT_MIB = 300.0
DECODE_LIMIT_S = 1.0  # any upload of at most 10 MiB: at most 1 s of CPU
BODY_LENGTH = 200_000
KINDS = ("head", "body", "chunked")
# What each kind sends, one byte at a time, over and over: a header line that never ends,
# body bytes, one-byte chunks.
TRICKLE = {"head": [b"X"], "body": [b"\xff"], "chunked": [bytes([c]) for c in b"1\r\nx\r\n"]}


# --- inputs -----------------------------------------------------------------


def gradient(width: int, height: int) -> np.ndarray:
    """A smooth ``(height, width)`` float32 ramp from 0 to 1: compresses to almost nothing."""
    rows = np.linspace(0.0, 0.5, height, dtype=np.float32)[:, None]
    cols = np.linspace(0.0, 0.5, width, dtype=np.float32)[None, :]
    return rows + cols


def big_png(mode: str, width: int = 8000, height: int = 5000) -> bytes:
    """A PNG of ``width`` x ``height`` in ``mode`` (``I;16``, ``RGBA`` or ``P`` with transparency), a few hundred KB."""
    ramp = gradient(width, height)
    options: dict[str, Any] = {}
    if mode == "I;16":
        image = Image.fromarray((ramp * 60000).astype(np.uint16))
    elif mode == "RGBA":
        grey = (ramp * 250).astype(np.uint8)
        image = Image.fromarray(np.stack([grey, grey[::-1], grey, 255 - grey], axis=-1))
    elif mode == "P":
        image = Image.fromarray((ramp * 250).astype(np.uint8)).convert("P")
        options["transparency"] = 7
    else:
        raise ValueError(f"mode must be I;16, RGBA or P, got {mode!r}")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **options)
    return buffer.getvalue()


def scan_segments(jpeg: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan of a JPEG: its SOS segment and the entropy-coded data after it."""
    segments, at = [], 2
    while at + 4 <= len(jpeg) and jpeg[at + 1] != 0xD9:
        start = at
        at += 2 + int.from_bytes(jpeg[at + 2 : at + 4], "big")
        if jpeg[start + 1] != 0xDA:
            continue
        while True:  # entropy-coded data: 0xFF is stuffing (FF00) or a restart marker until the next marker
            at = jpeg.index(b"\xff", at)
            if jpeg[at + 1] != 0x00 and not 0xD0 <= jpeg[at + 1] <= 0xD7:
                break
            at += 2
        segments.append((start, at))
    return segments


def progressive_bomb(scans: int, width: int = 8000, height: int = 5000) -> bytes:
    """A progressive JPEG holding ``scans`` scans: its last refinement scan repeated.

    Every repeated scan is a few bytes (the picture is one flat colour) but
    makes the decoder pass over all the image's blocks once more.
    """
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (120, 160, 90)).save(buffer, "JPEG", progressive=True, quality=90)
    jpeg = buffer.getvalue()
    segments = scan_segments(jpeg)
    if scans < len(segments):
        raise ValueError(f"a progressive JPEG already holds {len(segments)} scans; ask for at least as many")
    start, end = segments[-1]
    bomb = jpeg[:end] + jpeg[start:end] * (scans - len(segments)) + jpeg[end:]
    assert jpeg_scan_count(bomb) == scans
    return bomb


def small_photo() -> bytes:
    """A 160x120 JPEG: the normal request a probe sends."""
    pixels = (np.stack([gradient(160, 120)] * 3, axis=-1) * 400).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- slow clients -------------------------------------------------------------


class SlowClients:
    """Hold ``count`` connections that trickle a request one byte every ``interval`` seconds.

    A third of the connections trickle their head (a header line that never
    ends), a third send a complete head announcing a ``BODY_LENGTH``-byte
    body and trickle that, a third trickle a chunked body. A connection the
    server closes (with or without an answer) is recorded with its lifetime
    and replaced at once. Use as a context manager.
    """

    def __init__(self, url: str, count: int, interval: float = 1.0):
        address = url.split("//", 1)[1]
        host, port = address.rsplit(":", 1)
        self.address = (host, int(port))
        self.count = count
        self.interval = interval
        self.opened = 0
        self.cut: list[tuple[str, float, bytes]] = []  # (kind, lifetime in s, first bytes of the answer)
        self.refused = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slow-clients", daemon=True)
        self._selector = selectors.DefaultSelector()
        self._live: dict[socket.socket, tuple[str, float]] = {}
        self._sent: dict[socket.socket, int] = {}

    def __enter__(self) -> SlowClients:
        for number in range(self.count):
            self._open(KINDS[number % len(KINDS)])
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        for sock in list(self._live):
            self._selector.unregister(sock)
            sock.close()
        self._selector.close()

    def held(self) -> int:
        """Connections open right now."""
        return len(self._live)

    def _open(self, kind: str) -> None:
        try:
            sock = socket.create_connection(self.address, timeout=5)
        except OSError:
            self.refused += 1
            return
        sock.setblocking(False)
        if kind == "head":
            start = b"GET /health HTTP/1.1\r\nHost: slow\r\n"
        elif kind == "chunked":
            start = (
                b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: image/jpeg\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
        else:
            start = (
                b"POST /predict HTTP/1.1\r\nHost: slow\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: %d\r\n\r\n" % BODY_LENGTH
            )
        with contextlib.suppress(OSError):
            sock.send(start)
        self._live[sock] = (kind, time.monotonic())
        self._sent[sock] = 0
        self._selector.register(sock, selectors.EVENT_READ)
        self.opened += 1

    def _close(self, sock: socket.socket, answer: bytes) -> None:
        kind, opened = self._live.pop(sock)
        del self._sent[sock]
        self._selector.unregister(sock)
        sock.close()
        self.cut.append((kind, time.monotonic() - opened, answer[:40]))
        self._open(kind)

    def _run(self) -> None:
        next_byte = time.monotonic()
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                try:
                    answer = key.fileobj.recv(4096)
                except OSError:
                    answer = b""
                self._close(key.fileobj, answer)
            if time.monotonic() >= next_byte:
                next_byte += self.interval
                for sock, (kind, _) in list(self._live.items()):
                    try:
                        sock.send(TRICKLE[kind][self._sent[sock] % len(TRICKLE[kind])])
                        self._sent[sock] += 1
                    except OSError:
                        self._close(sock, b"")


def probe(url: str, seconds: float, photo: bytes) -> list[tuple[str, float, int]]:
    """For ``seconds``, alternate ``GET /health`` and a small ``POST /predict``; return (what, seconds, status)."""
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for what in ("health", "predict"):
            started = time.monotonic()
            try:
                if what == "health":
                    status = requests.get(f"{url}/health", timeout=30).status_code
                else:
                    files = {"file": ("probe.jpg", photo, "image/jpeg")}
                    status = requests.post(f"{url}/predict", files=files, timeout=30).status_code
            except requests.RequestException:
                status = 0
            samples.append((what, time.monotonic() - started, status))
        time.sleep(0.2)
    return samples


def slow_client_run(url: str, clients: int, seconds: float, interval: float = 1.0) -> dict[str, Any]:
    """Trickle ``clients`` connections for ``seconds`` while probing; summarise what happened."""
    photo = small_photo()
    with SlowClients(url, clients, interval) as slow:
        time.sleep(1.0)  # let every slow connection reach a worker first
        held_at_start = slow.held()
        samples = probe(url, seconds, photo)
        held_at_end = slow.held()
    latencies = [s[1] for s in samples]
    lifetimes = [c[1] for c in slow.cut]
    return {
        "clients": clients,
        "seconds": seconds,
        "held_at_start": held_at_start,
        "held_at_end": held_at_end,
        "opened": slow.opened,
        "refused": slow.refused,
        "cut": len(slow.cut),
        "cut_with_408": sum(1 for c in slow.cut if c[2].startswith(b"HTTP/1.1 408")),
        "lifetime_max_s": max(lifetimes, default=None),
        "lifetime_min_s": min(lifetimes, default=None),
        "probes": len(samples),
        "probe_failures": sum(1 for s in samples if s[2] != 200),
        "probe_p50_s": float(np.percentile(latencies, 50)) if latencies else None,
        "probe_max_s": max(latencies, default=None),
    }


# --- connection attacks: a few bytes that once stopped the service ------------------------


def _address(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _head(method: bytes = b"POST", path: bytes = b"/predict", *extra: bytes) -> bytes:
    return b"%s %s HTTP/1.1\r\nHost: attack\r\n" % (method, path) + b"".join(h + b"\r\n" for h in extra) + b"\r\n"


def _multipart_request(photo: bytes, path: bytes) -> bytes:
    boundary = b"attackboundary"
    body = (
        b'--%s\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n%s\r\n--%s--\r\n" % (boundary, photo, boundary)
    )
    content_type = b"Content-Type: multipart/form-data; boundary=" + boundary
    return _head(b"POST", path, content_type, b"Content-Length: %d" % len(body)) + body


def attack_payloads(photo: bytes) -> dict[str, tuple[bytes, int]]:
    """What each attacking connection sends, then it goes silent: name -> (bytes, SO_RCVBUF or 0 to keep)."""
    chunked = b"Transfer-Encoding: chunked"
    pipelined = _multipart_request(photo, b"/predict?explain=1") * 14
    return {
        "negative chunk size": (_head(b"POST", b"/predict", chunked) + b"-6\r\nabcdef\r\n0\r\n\r\n", 0),
        "1,100-byte chunk-size line": (_head(b"POST", b"/predict", chunked) + b"1;" + b"a" * 1100, 0),
        "14 pipelined explains, never read": (pipelined, 4096),
        # The same with answers large enough to fill the socket buffers whatever the model: 400 x 19 KB.
        "400 pipelined /openapi.json, never read": (_head(b"GET", b"/openapi.json") * 400, 4096),
        "idle connection": (b"", 0),
        "13.7 MB body, then idle": (
            _head(b"POST", b"/predict", b"Content-Type: image/jpeg", b"Content-Length: 13700001") + bytes(13_700_000),
            0,
        ),
    }


class Attack:
    """``count`` connections that each send ``payload`` (from a thread) and then neither send nor read.

    Records, for each connection, when the server answered or closed it and
    the first bytes of what it answered. Use as a context manager.
    """

    def __init__(self, url: str, payload: bytes, count: int, receive_buffer: int = 0):
        self.address = _address(url)
        self.payload = payload
        self.count = count
        self.receive_buffer = receive_buffer
        self.started = time.monotonic()
        self.sockets: list[socket.socket] = []
        self.refused = 0
        self.ended: dict[int, tuple[float, bytes]] = {}  # connection number -> (seconds, first bytes)
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> Attack:
        for _ in range(self.count):
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                if self.receive_buffer:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
                sock.settimeout(10)
                sock.connect(self.address)
            except OSError:
                self.refused += 1
                continue
            self.sockets.append(sock)
        senders = [threading.Thread(target=self._send, args=(sock,), daemon=True) for sock in self.sockets]
        for sender in senders:
            sender.start()
        self._watcher.start()
        return self

    def _send(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.sendall(self.payload)

    def _watch(self) -> None:
        if self.receive_buffer:  # this attacker never reads: see drain_unread()
            return
        selector = selectors.DefaultSelector()
        for number, sock in enumerate(self.sockets):
            selector.register(sock, selectors.EVENT_READ, number)
        while not self._stop.is_set() and len(self.ended) < len(self.sockets):
            for key, _ in selector.select(timeout=0.1):
                try:
                    answer = key.fileobj.recv(4096)
                except OSError:
                    answer = b""
                self.ended[key.data] = (time.monotonic() - self.started, answer[:40])
                selector.unregister(key.fileobj)
        selector.close()

    def drain_unread(self) -> None:
        """Read what the never-reading connections were sent: those the server closed end in EOF or a reset."""
        for number, sock in enumerate(self.sockets):
            # A close queued behind megabytes still in flight arrives after them: wait a moment for more
            # rather than taking the first instant with nothing ready for an open connection.
            sock.settimeout(1.0)
            first = b""
            while True:
                try:
                    data = sock.recv(1 << 20)
                except TimeoutError:
                    break  # still open
                except OSError:
                    data = b""
                first = first or data[:40]
                if not data:
                    self.ended[number] = (time.monotonic() - self.started, first)
                    break

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._watcher.join()
        for sock in self.sockets:
            sock.close()

    def summary(self) -> dict[str, Any]:
        if self.receive_buffer:
            self.drain_unread()
        ended = list(self.ended.values())
        return {
            "connections": len(self.sockets),
            "refused": self.refused,
            "ended": len(ended),
            "ended_max_s": max((e[0] for e in ended), default=None),
            "statuses": sorted({e[1][9:12].decode("latin-1") for e in ended if e[1].startswith(b"HTTP/1.1 ")}),
        }


def health_probes(url: str, seconds: float, interval: float = 0.25) -> dict[str, Any]:
    """``GET /health`` on a new connection every ``interval`` seconds for ``seconds``: failures and latencies."""
    latencies, failures = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            ok = requests.get(f"{url}/health", timeout=10, headers={"Connection": "close"}).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.monotonic() - started)
        failures += not ok
        time.sleep(interval)
    return {"probes": len(latencies), "probe_failures": failures, "probe_max_s": max(latencies, default=None)}


def workers_rss_mib(server: GunicornServer) -> float:
    """Resident memory of the server's workers together, in MiB."""
    total = 0
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += psutil.Process(pid).memory_info().rss
    return total / 2**20


def worker_cpu_s(server: GunicornServer) -> float:
    """CPU seconds the server's workers have used so far."""
    total = 0.0
    for pid in server.worker_pids():
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def attack_run(
    server: GunicornServer, name: str, count: int, seconds: float, photo: bytes, settle: float = 0.0
) -> dict[str, Any]:
    """Attack ``server`` with ``count`` connections of kind ``name`` while probing ``/health`` for ``seconds``.

    Then wait up to ``settle`` more seconds for the server to end every attacking connection.
    """
    payload, receive_buffer = attack_payloads(photo)[name]
    cpu_before, rss_before = worker_cpu_s(server), workers_rss_mib(server)
    with Attack(server.url, payload, count, receive_buffer) as attack:
        probes = health_probes(server.url, seconds)
        cpu = worker_cpu_s(server) - cpu_before
        probes["workers_rss_rise_mib"] = workers_rss_mib(server) - rss_before
        deadline = time.monotonic() + settle
        while attack.summary()["ended"] < len(attack.sockets) and time.monotonic() < deadline:
            time.sleep(0.25)
        return {"attack": name, **attack.summary(), **probes, "worker_cpu_s": cpu}


# The connection attacks of a run, each alone on a fresh server: name -> (connections, seconds of probing).
ATTACKS = {
    "negative chunk size": (2, 10.0),
    "1,100-byte chunk-size line": (10, 15.0),
    "14 pipelined explains, never read": (20, 15.0),
    "400 pipelined /openapi.json, never read": (20, 15.0),
    "idle connection": (2100, 10.0),
    "13.7 MB body, then idle": (40, 15.0),
}


def attack_runs(model: str, log, root: Path, env: dict[str, str], names: Sequence[str]) -> dict[str, Any]:
    """Each of :data:`ATTACKS` named in ``names`` against its own fresh server (2 workers x 4 threads, as shipped)."""
    photo = small_photo()
    results = {}
    for name in names:
        count, seconds = ATTACKS[name]
        with GunicornServer(model, log, workers=2, threads=4, root=root, env=env) as server:
            results[name] = attack_run(server, name, count, seconds, photo)
    return results


def json_zeros_run(server: GunicornServer) -> dict[str, Any]:
    """One 14 MB ``{"images": [0, 0, ...]}`` body: the answer, its time and the worker's peak memory rise."""
    (pid,) = server.worker_pids()
    idle = psutil.Process(pid).memory_info().rss / 2**20
    body = b'{"images": [' + b"0," * 7_000_000 + b"0]}"
    started = time.monotonic()
    peak, response = peak_during_mib(
        pid,
        lambda: requests.post(
            f"{server.url}/predict", data=body, headers={"Content-Type": "application/json"}, timeout=300
        ),
    )
    return {
        "bytes": len(body),
        "status": response.status_code,
        "code": _error_code(response),
        "seconds": time.monotonic() - started,
        "rise_mib": peak - idle,
    }


def random_methods_run(url: str, count: int = 2000, seed: int = 0) -> dict[str, Any]:
    """``count`` requests with random 20-letter methods: how much ``/metrics`` grew."""
    import random

    rng = random.Random(seed)
    before = len(requests.get(f"{url}/metrics", timeout=30).content)
    with requests.Session() as session:
        for _ in range(count):
            method = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(20))
            session.request(method, f"{url}/health", timeout=30)
    started = time.monotonic()
    after = len(requests.get(f"{url}/metrics", timeout=30).content)
    return {"requests": count, "before_bytes": before, "after_bytes": after, "scrape_s": time.monotonic() - started}


def bomb_runs(server: GunicornServer) -> dict[str, Any]:
    """Each decode bomb (:mod:`benchmarks.decode_bombs`) posted alone: answer, worker CPU and peak memory rise."""
    from benchmarks.decode_bombs import corpus

    (pid,) = server.worker_pids()
    results = {}
    for name, data in corpus().items():
        idle = psutil.Process(pid).memory_info().rss / 2**20
        cpu = worker_cpu_s(server)

        def send(data=data):
            return requests.post(
                f"{server.url}/predict", data=data, headers={"Content-Type": "application/octet-stream"}, timeout=300
            )

        peak, response = peak_during_mib(pid, send)
        results[name] = {
            "bytes": len(data),
            "status": response.status_code,
            "code": _error_code(response),
            "cpu_s": worker_cpu_s(server) - cpu,
            "rise_mib": peak - idle,
        }
    return results


def _error_code(response: requests.Response) -> str | None:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


# --- bombs and memory -----------------------------------------------------------


def decode_times() -> dict[str, Any]:
    """CPU seconds to decode the worst accepted scan bomb and to refuse a far worse one."""
    from catdog.errors import InvalidImage

    accepted = progressive_bomb(MAX_JPEG_SCANS)
    started = time.process_time()
    open_image(accepted, draft_size=256)
    accepted_s = time.process_time() - started
    refused = progressive_bomb(5000)
    started = time.process_time()
    try:
        open_image(refused, draft_size=256)
        outcome = "decoded"
    except InvalidImage as exc:
        outcome = exc.reason
    return {
        "accepted_scans": MAX_JPEG_SCANS,
        "accepted_bytes": len(accepted),
        "accepted_cpu_s": accepted_s,
        "refused_scans": 5000,
        "refused_bytes": len(refused),
        "refused_cpu_s": time.process_time() - started,
        "refused_as": outcome,
    }


def _peak_mib(pid: int) -> float:
    """Peak resident memory (VmHWM), which psutil does not report."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise KeyError("VmHWM")


def peak_during_mib(pid: int, send) -> tuple[float, Any]:
    """Process ``pid``'s peak resident memory while ``send()`` runs, in MiB, and what ``send`` returned.

    Writing 5 to ``/proc/PID/clear_refs`` resets the peak (VmHWM) to the
    current resident size (Linux 4.0 and later).
    """
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    result = send()
    return _peak_mib(pid), result


def worst_requests() -> dict[str, tuple[list[tuple[str, bytes]], dict[str, str]]]:
    """The heaviest requests within the limits: name -> (multipart files, query)."""
    pngs = {mode: big_png(mode) for mode in ("I;16", "RGBA", "P")}
    small = small_photo()
    batch = [("a.png", pngs["RGBA"]), ("b.png", pngs["I;16"])] + [(f"{i}.jpg", small) for i in range(14)]
    return {
        "16-bit PNG 8000x5000, explain": ([("big.png", pngs["I;16"])], {"explain": "1"}),
        "RGBA PNG 8000x5000, explain": ([("big.png", pngs["RGBA"])], {"explain": "1"}),
        "palette PNG 8000x5000, explain": ([("big.png", pngs["P"])], {"explain": "1"}),
        "batch of 16 (two 8000x5000), explain": (batch, {"explain": "1"}),
    }


def memory_run(server: GunicornServer) -> dict[str, Any]:
    """Peak-memory rise of the single worker of ``server`` for each of :func:`worst_requests`.

    The rise is measured from the worker's resident memory when it was idle
    before the first of them, so memory kept from an earlier request (the
    allocator does not hand everything back) cannot hide a later one's peak.
    """
    (pid,) = server.worker_pids()
    idle = psutil.Process(pid).memory_info().rss / 2**20
    results = {}
    for name, (files, query) in worst_requests().items():
        parts = [("file", (filename, data, "image/png")) for filename, data in files]

        def send(query=query, parts=parts):
            return requests.post(f"{server.url}/predict", params=query, files=parts, timeout=120).status_code

        peak, status = peak_during_mib(pid, send)
        results[name] = {"rise_mib": peak - idle, "status": status, "bytes": sum(len(d) for _, d in files)}
    return results


# --- report ---------------------------------------------------------------------


def missed_targets(report: dict[str, Any]) -> list[str]:
    missed = []
    slow = report.get("slow_clients")
    if slow and (slow["probe_failures"] or (slow["probe_max_s"] or 0) > PROBE_LIMIT_S):
        missed.append(f"a probe failed or took over {PROBE_LIMIT_S} s")
    if slow and slow["held_at_end"] < slow["clients"] * 0.9:
        missed.append("the slow clients were not all held (the attack did not run as meant)")
    decode = report.get("decode")
    if decode and (decode["accepted_cpu_s"] > DECODE_LIMIT_S or decode["refused_as"] != "too_complex"):
        missed.append("the scan bomb took too long or was not refused")
    for name, result in report.get("memory", {}).items():
        if result["status"] != 200 or result["rise_mib"] > MEMORY_LIMIT_MIB:
            missed.append(f"{name}: status {result['status']}, peak rise {result['rise_mib']:.0f} MiB")
    for name, result in report.get("attacks", {}).items():
        if result["probe_failures"] or (result["probe_max_s"] or 0) > PROBE_LIMIT_S:
            missed.append(f"{name}: a probe failed or took over {PROBE_LIMIT_S} s")
    for name, result in report.get("bombs", {}).items():
        if result["cpu_s"] > DECODE_LIMIT_S or result["rise_mib"] > MEMORY_LIMIT_MIB:
            missed.append(f"{name}: {result['cpu_s']:.1f} s of CPU, peak rise {result['rise_mib']:.0f} MiB")
    zeros = report.get("json_zeros")
    if zeros and (zeros["seconds"] > PROBE_LIMIT_S or zeros["rise_mib"] > MEMORY_LIMIT_MIB):
        missed.append("the 14 MB JSON list took too long or too much memory")
    return missed


def markdown(report: dict[str, Any]) -> str:
    lines = ["| measure | result | target |", "|---|---|---|"]
    slow, decode = report.get("slow_clients"), report.get("decode")
    if slow:
        lines += [
            f"| slow clients held (trickling 1 byte/{report['interval']:g} s) | {slow['held_at_end']} of "
            f"{slow['clients']}, {slow['opened']} opened in {slow['seconds']:g} s | - |",
            f"| a trickling connection lives | {slow['lifetime_min_s']:.1f}-{slow['lifetime_max_s']:.1f} s "
            f"({slow['cut_with_408']} of {slow['cut']} answered 408) | bounded |",
            f"| probes (/health, small POST /predict) | {slow['probes']}, {slow['probe_failures']} failed, "
            f"p50 {slow['probe_p50_s'] * 1000:.0f} ms, max {slow['probe_max_s'] * 1000:.0f} ms "
            f"| each < {PROBE_LIMIT_S:g} s |",
        ]
    if decode:
        lines += [
            f"| worst accepted scan bomb ({decode['accepted_scans']} scans, 8000x5000, "
            f"{decode['accepted_bytes']:,} B) | {decode['accepted_cpu_s']:.2f} s CPU | < {DECODE_LIMIT_S:g} s |",
            f"| scan bomb of {decode['refused_scans']} scans ({decode['refused_bytes']:,} B) "
            f"| {decode['refused_as']} in {decode['refused_cpu_s'] * 1000:.0f} ms CPU | refused |",
        ]
    for name, result in report.get("memory", {}).items():
        lines.append(
            f"| peak RSS rise: {name} ({result['bytes']:,} B) | {result['rise_mib']:.0f} MiB, status {result['status']}"
            f" | < {MEMORY_LIMIT_MIB:g} MiB |"
        )
    for name, r in report.get("attacks", {}).items():
        ended = f"{r['ended']} ended" + (f" by {r['ended_max_s']:.1f} s" if r["ended_max_s"] is not None else "")
        statuses = ", ".join(r["statuses"]) or "no answer"
        lines.append(
            f"| {r['connections']:,} x {name} | probes: {r['probe_failures']} of {r['probes']} failed, max "
            f"{r['probe_max_s'] * 1000:.0f} ms; {ended} ({statuses}); workers {r['worker_cpu_s']:.1f} s CPU, "
            f"RSS {r['workers_rss_rise_mib']:+.0f} MiB "
            f"| probes < {PROBE_LIMIT_S:g} s |"
        )
    zeros = report.get("json_zeros")
    if zeros:
        lines.append(
            f"| {zeros['bytes'] / 1e6:.0f} MB JSON list of zeros | {zeros['status']} {zeros['code']} in "
            f"{zeros['seconds'] * 1000:.0f} ms, peak rise {zeros['rise_mib']:.0f} MiB | < {PROBE_LIMIT_S:g} s, "
            f"< {MEMORY_LIMIT_MIB:g} MiB |"
        )
    methods = report.get("random_methods")
    if methods:
        lines.append(
            f"| {methods['requests']:,} random 20-letter methods | /metrics {methods['before_bytes']:,} B -> "
            f"{methods['after_bytes']:,} B, scrape {methods['scrape_s'] * 1000:.0f} ms | bounded |"
        )
    for name, result in report.get("bombs", {}).items():
        lines.append(
            f"| {name} ({result['bytes']:,} B) | {result['status']} {result['code'] or ''}, "
            f"{result['cpu_s']:.2f} s CPU, peak rise {result['rise_mib']:.0f} MiB "
            f"| < {DECODE_LIMIT_S:g} s, < {MEMORY_LIMIT_MIB:g} MiB |"
        )
    return "\n".join(lines)


PARTS = ("slow", "memory", "decode", "attacks", "requests")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__.split("\n\n")[0])
    default_model = os.environ.get("CATDOG__MODEL__PATH") or str(PROJECT_ROOT / "model" / "model.h5")
    parser.add_argument("--model", default=default_model, help="model file the server loads")
    parser.add_argument("--clients", type=int, default=64, help="slow connections held at once")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of slow clients")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a slow client's bytes")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to measure")
    parser.add_argument("--attacks", nargs="+", choices=list(ATTACKS), default=list(ATTACKS), help="which attacks")
    parser.add_argument(
        "--root", type=Path, default=PROJECT_ROOT, help="checkout to serve (its src/ first on the path), to compare"
    )
    parser.add_argument("--json", type=Path, help="also write the report here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report: dict[str, Any] = {"interval": args.interval}
    root = args.root.resolve()
    env = {"PYTHONPATH": str(root / "src")} if root != PROJECT_ROOT else {}
    with open(os.devnull, "w") as log:
        if "slow" in args.parts:
            with GunicornServer(args.model, log, workers=2, threads=4, root=root, env=env) as server:
                report["slow_clients"] = slow_client_run(server.url, args.clients, args.duration, args.interval)
        if "memory" in args.parts:
            with GunicornServer(args.model, log, workers=1, threads=4, root=root, env=env) as server:
                report["memory"] = memory_run(server)
        if "attacks" in args.parts:
            report["attacks"] = attack_runs(args.model, log, root, env, args.attacks)
        if "requests" in args.parts:
            with GunicornServer(args.model, log, workers=1, threads=4, root=root, env=env) as server:
                report["bombs"] = bomb_runs(server)
            with GunicornServer(args.model, log, workers=1, threads=4, root=root, env=env) as server:
                report["json_zeros"] = json_zeros_run(server)
            with GunicornServer(args.model, log, workers=2, threads=4, root=root, env=env) as server:
                report["random_methods"] = random_methods_run(server.url)
    if "decode" in args.parts:
        report["decode"] = decode_times()
    print(markdown(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    missed = missed_targets(report)
    for problem in missed:
        print(f"MISSED: {problem}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
