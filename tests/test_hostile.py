"""Hostile clients against the real gunicorn (gunicorn.conf.py, as the README starts it).

Slow clients that trickle their requests must not stop the service from
answering others, and are cut off after a bounded time; the heaviest
requests within the limits must not raise a worker's peak memory by more
than ~300 MB (docs/hardening.md). The one-minute run of the slow clients is under
``-m slow``; a shorter one runs in CI.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time

import pytest

from benchmarks.hostile import MEMORY_LIMIT_MIB, attack_run, memory_run, slow_client_run
from helpers import make_photo
from rawhttp import PendingRequest

CLIENTS = 64
PROBE_LIMIT_S = 2.0  # every probe answers within 2 s while the slow clients trickle
HEADER_TIMEOUT = 10  # gunicorn.conf.py's defaults, which these servers run with
BODY_TIMEOUT = 10


@pytest.fixture(scope="module")
def shipped_server(live_server):
    """2 workers x 4 threads with every other setting as gunicorn.conf.py ships it."""
    return live_server(workers=2, threads=4)


def check_slow_clients(url: str, seconds: float) -> dict:
    result = slow_client_run(url, CLIENTS, seconds, interval=1.0)
    print(result)
    # The attack ran as meant: all 64 connections were open on the server at the start and the end.
    assert result["held_at_start"] == CLIENTS and result["held_at_end"] >= CLIENTS * 0.9, result
    assert result["refused"] == 0, result
    # Nobody else noticed: every probe answered 200, each within 2 s.
    assert result["probe_failures"] == 0 and result["probe_max_s"] < PROBE_LIMIT_S, result
    # The server cut the trickling connections off after its deadlines (plus its 1 s sweep and
    # some scheduling slack on a busy machine), each with a 408.
    assert result["cut"] >= CLIENTS, result
    assert result["lifetime_max_s"] < max(HEADER_TIMEOUT, BODY_TIMEOUT) + 5, result
    assert result["cut_with_408"] >= result["cut"] * 0.9, result
    return result


def test_slow_clients_do_not_freeze_the_server(shipped_server):
    check_slow_clients(shipped_server.url, 16.0)


@pytest.mark.slow
def test_a_minute_of_slow_clients_does_not_freeze_the_server(shipped_server):
    result = check_slow_clients(shipped_server.url, 60.0)
    assert result["cut"] >= 4 * CLIENTS  # each slot was cut and reopened several times


@pytest.fixture(scope="module")
def single_worker(live_server):
    """One worker, so the memory each request raises is that worker's."""
    return live_server(workers=1, threads=4)


def test_the_heaviest_requests_within_the_limits_stay_under_300_mb(single_worker):
    results = memory_run(single_worker)
    print(results)
    for name, result in results.items():
        assert result["status"] == 200, (name, result)
        assert result["rise_mib"] < MEMORY_LIMIT_MIB, (name, result)


def test_a_body_shorter_than_its_content_length_is_a_bad_request(shipped_server):
    photo = make_photo()
    pending = PendingRequest(shipped_server.url, "/predict", photo, "image/jpeg", timeout=30)
    pending.send(len(photo) // 2)
    pending.sock.shutdown(socket.SHUT_WR)  # the client says it has sent all it will
    status, body = pending.response()
    assert status == 400 and body["error"]["code"] == "bad_body", body
    assert f"of the {len(photo):,} bytes" in body["error"]["message"]


def test_an_honest_slow_upload_still_arrives(shipped_server):
    # 3 s for a 60 KB photo: far slower than any real link, yet above the minimum body rate.
    photo = make_photo((400, 300), "PNG")
    pending = PendingRequest(shipped_server.url, "/predict", photo, "image/png", timeout=30)
    pending.send_slowly(pieces=6, pause=0.5)
    status, body = pending.response()
    assert status == 200 and body["label"] in ("Cat", "Dog"), body


def raw_exchange(url: str, data: bytes, *, wait_for: bytes = b"", then: bytes = b"") -> bytes:
    """Send ``data``; optionally read until ``wait_for`` arrives, then send ``then``; return all that came back."""
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(data)
        received = b""
        while wait_for and wait_for not in received:
            received += sock.recv(4096)
        sock.sendall(then)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_expect_100_continue_is_answered_before_the_body(shipped_server):
    photo = make_photo()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nContent-Length: {len(photo)}\r\n"
        "Expect: 100-continue\r\nConnection: close\r\n\r\n"
    ).encode()
    received = raw_exchange(shipped_server.url, head, wait_for=b"100 Continue\r\n\r\n", then=photo)
    assert received.startswith(b"HTTP/1.1 100 Continue") and b"HTTP/1.1 200 OK" in received


def test_pipelined_and_chunked_requests_are_answered_in_order(shipped_server):
    photo = make_photo()
    body = b"".join(b"%x\r\n%s\r\n" % (len(photo[i : i + 999]), photo[i : i + 999]) for i in range(0, len(photo), 999))
    requests_ = (
        b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
        b"POST /predict HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
        + b"0\r\n\r\n"
        b"GET /nowhere HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    received = raw_exchange(shipped_server.url, requests_)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"200", b"404"], received[:500]
    assert b'"label"' in received


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"get /health HTTP/1.1\r\nHost: t\r\n\r\n", 400, "bad_request"),  # h11 takes any token as a method
        (b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: a\x01b\r\n\r\n", 400, "bad_request"),
        (
            b"GET /health HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",
            431,
            "header_too_large",
        ),
        (b"GET /health HTTP/1.1\r\nHost: t\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 431, "header_too_large"),
    ],
    ids=["lowercase method", "control byte in a header value", "120 header fields", "9,000-byte header field"],
)
def test_what_gunicorns_parser_refuses_is_answered_in_the_apis_json(shipped_server, request_bytes, status, code):
    """h11 frames these, gunicorn's stricter parser refuses them: its status, but our body, not its HTML page."""
    received = raw_exchange(shipped_server.url, request_bytes)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), received[:300]
    assert b"content-type: application/json" in head.lower(), head
    assert json.loads(body)["error"]["code"] == code


# --- a few bytes that once stopped the service: each on a server with short deadlines -------------

TIGHT = 3  # seconds: the tight server's header, body, idle and write deadlines
SLOTS = 40  # connections per worker
SWEEP = 1.5  # the worker checks deadlines every second; some slack on a busy machine


@pytest.fixture(scope="module")
def tight_server(live_server):
    """2 workers x 4 threads with short deadlines, few connection slots and a small buffer budget."""
    env = {
        "GUNICORN_CMD_ARGS": f"--worker-connections {SLOTS}",
        **{f"GUNICORN_{name}_TIMEOUT": str(TIGHT) for name in ("HEADER", "BODY", "IDLE", "WRITE")},
        "GUNICORN_MAX_BUFFERED": str(32 * 1024 * 1024),
        "GUNICORN_MAX_REQUESTS": "0",
    }
    return live_server(workers=2, threads=4, env=env)


def check_attack(server, name: str, count: int, seconds: float, settle: float = 0.0) -> dict:
    result = attack_run(server, name, count, seconds, make_photo(), settle)
    print(result)
    assert result["connections"] == count and result["refused"] == 0, result
    assert result["probe_failures"] == 0 and result["probe_max_s"] < PROBE_LIMIT_S, result
    return result


def test_a_negative_chunk_size_is_refused_at_once_without_spinning(tight_server):
    result = check_attack(tight_server, "negative chunk size", 2, 4.0)
    assert result["ended"] == 2 and result["statuses"] == ["400"] and result["ended_max_s"] < 1.0, result
    assert result["worker_cpu_s"] < 2.0, result  # a spinning loop would burn the whole 4 s on each worker


def test_long_chunk_size_lines_are_held_by_the_loop_and_timed_out(tight_server):
    # More connections than threads: handed to threads, they would hold them all.
    result = check_attack(tight_server, "1,100-byte chunk-size line", 10, TIGHT + SWEEP + 2)
    assert result["ended"] == 10 and result["statuses"] == ["408"], result
    assert result["ended_max_s"] < TIGHT + SWEEP + 1, result


def test_clients_that_never_read_their_answers_hold_no_thread_and_are_cut(tight_server):
    # Blocked in a send, 20 such clients would hold all 8 threads.
    result = check_attack(tight_server, "400 pipelined /openapi.json, never read", 20, TIGHT + SWEEP + 2, settle=15)
    assert result["ended"] == 20, result


def test_an_answer_not_read_in_time_is_dropped_with_a_reset(tight_server):
    """Past the write deadline the server resets the connection: the kernel keeps no megabytes for it.

    A plain close would queue the FIN behind a full send buffer of answers: the
    client would still be handed megabytes, and never see the end at all if it
    keeps not reading.
    """
    port = int(tight_server.url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n" * 400)
        time.sleep(TIGHT + SWEEP + 1)
        sock.settimeout(2.0)
        received, ended = 0, None
        with contextlib.suppress(TimeoutError):
            while ended is None:
                try:
                    data = sock.recv(1 << 20)
                except ConnectionResetError:
                    ended = "reset"
                else:
                    received += len(data)
                    ended = "eof" if not data else None
    assert ended == "reset", (ended, received)
    assert received < 1 << 20, received  # at most what had reached the client's own small buffer


def test_past_the_connection_slots_idle_connections_make_room(tight_server):
    result = check_attack(tight_server, "idle connection", 2 * SLOTS + 30, 3.0)
    assert result["ended"] >= 30, result  # the longest idle gave way to newer connections


def test_buffered_bodies_have_a_budget_and_an_idle_deadline(tight_server):
    # 8 x 13.7 MB parked bodies against 2 x 32 MB: the budget answers some 503 at once.
    result = check_attack(tight_server, "13.7 MB body, then idle", 8, TIGHT + SWEEP + 3)
    assert result["ended"] == 8 and set(result["statuses"]) == {"408", "503"}, result
    assert result["ended_max_s"] < TIGHT + SWEEP + 2, result
