"""Fuzz ``POST /predict`` through the real server (gunicorn, 2 workers).

Random bytes, damaged and truncated JPEG/PNG/GIF/WebP/BMP/TIFF files,
decompression bombs, broken and huge multipart bodies, hostile JSON, unicode
and path-traversal file names, abuse of HTTP itself and a slowly sent body.

Every answer the app gives must be JSON: 200 with a label for inputs that
really are images, otherwise a 4xx with ``{"error": {"code", "message"}}``;
never a 5xx. Requests gunicorn refuses before the app sees them (a malformed
header) must get a 4xx too. The workers must be the same processes before
and after, and the log free of tracebacks. The short form sends a few
hundred cases; ``pytest -m slow`` sends thousands.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import io
import json
import random
import socket
import struct
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from benchmarks.load import multipart_body
from helpers import damage, make_photo, png_declaring
from rawhttp import PendingRequest, chunked

FORMATS = ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]
MAGIC = [
    b"\xff\xd8\xff\xe0",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x10\x00\x00WEBPVP8 ",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
]
REFUSED = frozenset({413, 415, 422})
TRANSPORT_LIMIT = 10 * 1024 * 1024 * 4 // 3 + 64 * 1024  # uploads.transport_limit of config.yaml's 10 MiB
SHORT_CASES, LONG_CASES = 400, 6000


@dataclasses.dataclass(frozen=True)
class Case:
    """One request of the fuzz run.

    Attributes:
        category: Which family of hostile input it belongs to.
        body: The request body.
        content_type: The Content-Type header, or ``None`` for none.
        allowed: The statuses it may get; ``None``: 200 or any 4xx.
        unread_body: The app refuses it before reading a body of over 64 KiB.
            gunicorn then drains at most 64 KiB and closes the connection
            after answering, though its answer announced keep-alive; so the
            client asks for ``Connection: close`` rather than reuse it.
    """

    category: str
    body: bytes
    content_type: str | None = "application/octet-stream"
    allowed: frozenset[int] | None = None
    unread_body: bool = False


def multipart(category: str, data: bytes, filename: str = "photo.jpg", allowed=None) -> Case:
    return Case(category, *multipart_body(filename, data), allowed)


def as_json(category: str, data: bytes, allowed=None) -> Case:
    return Case(category, json.dumps({"image": base64.b64encode(data).decode()}).encode(), "application/json", allowed)


def any_form(rng: random.Random, category: str, data: bytes, allowed=None) -> Case:
    form = rng.choice(["raw", "multipart", "json"])
    if form == "multipart":
        return multipart(category, data, allowed=allowed)
    if form == "json":
        return as_json(category, data, allowed)
    return Case(category, data, rng.choice(["image/jpeg", "image/png", "application/octet-stream"]), allowed)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def base_files() -> dict[str, bytes]:
    photo = Image.open(io.BytesIO(make_photo((64, 48), "PNG")))
    return {fmt: encoded(photo, fmt) for fmt in FORMATS}


# --- decompression bombs ---------------------------------------------------------------


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) declares ``width`` x ``height``."""
    data = bytearray(make_photo((32, 24)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    """A small GIF whose logical screen and first frame declare ``width`` x ``height``."""
    data = bytearray(encoded(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)
    frame = data.index(b",")
    data[frame + 5 : frame + 9] = struct.pack("<HH", width, height)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A small lossy WebP whose VP8 frame header declares ``width`` x ``height`` (at most 16383)."""
    data = bytearray(encoded(Image.new("RGB", (16, 16), (200, 80, 20)), "WEBP"))
    start = data.index(b"\x9d\x01\x2a") + 3
    data[start : start + 4] = struct.pack("<HH", width, height)
    return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
    data = bytearray(encoded(Image.new("RGB", (4, 4)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def gif_with_frames(count: int) -> bytes:
    frames = [Image.new("P", (40, 40), i % 256) for i in range(count)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10)


def png_of_zeros(width: int, height: int) -> bytes:
    """A real, valid RGB PNG of ``width`` x ``height`` black pixels: tiny file, large decode."""
    raw = zlib.compress((b"\x00" * (1 + 3 * width)) * height, 9)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def bombs() -> list[Case]:
    declared = [
        png_declaring(100_000, 100_000),
        png_declaring(65_535, 65_535),
        png_declaring(8000, 5001),
        png_declaring(1, 2**31 - 1),
        png_declaring(2**31 - 1, 1),
        png_declaring(0, 0),
        jpeg_declaring(65_500, 65_500),
        jpeg_declaring(10_000, 5000),
        gif_declaring(65_535, 65_535),
        gif_declaring(20_000, 2001),
        webp_declaring(16_383, 16_383),
        bmp_declaring(100_000, 100_000),
        bmp_declaring(30_000, -30_000),
    ]
    cases = [Case("bomb", data, "application/octet-stream", REFUSED | {400}) for data in declared]
    cases.append(Case("bomb", gif_with_frames(3000), "image/gif", frozenset({200})))
    cases.append(Case("bomb", png_of_zeros(6000, 6000), "image/png", frozenset({200})))  # 36 Mpx: under the limit
    return cases


# --- damaged files ---------------------------------------------------------------------


def truncations(files: dict[str, bytes]) -> list[Case]:
    """Each file cut inside its signature, its header, its data and just before its end."""
    cases = []
    for data in files.values():
        size = len(data)
        offsets = {
            1,
            2,
            3,
            4,
            6,
            8,
            12,
            16,
            24,
            32,
            48,
            64,
            100,
            200,
            size // 4,
            size // 2,
            3 * size // 4,
            size - 64,
            size - 8,
            size - 2,
            size - 1,
        }
        cases += [Case("truncated", data[:at], "image/jpeg") for at in sorted(offsets) if 0 < at < size]
    return cases


# --- multipart, file names, JSON ---------------------------------------------------------


HOSTILE_NAMES = [
    "../../../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow",
    "C:\\boot.ini",
    "ü-🐱-猫.jpg",
    "\u202egpj.exe",
    "<script>alert(1)</script>.jpg",
    "a\x00b.jpg",
    "x" * 20_000,
    "",
    ".",
    "CON",
    "'; DROP TABLE x;--",
    "%2e%2e%2fetc%2fpasswd",
    "photo.jpg\r\nX-Injected: 1",
]


def multipart_cases(photo: bytes) -> list[Case]:
    def part(name: str, filename: str, data: bytes, extra: str = "") -> bytes:
        return (
            (
                f'--b\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n{extra}'
                f"Content-Type: image/jpeg\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )

    ok = frozenset({200})
    cases = [multipart("filename", photo, name, ok) for name in HOSTILE_NAMES]
    cases += [
        Case("filename", part("file", "x", photo)[:-2] + b"\r\n--b--\r\n", "multipart/form-data; boundary=b", ok),
        Case(
            "filename",
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''%E2%9C%93%2F..%2F.jpg"
            b"\r\n\r\n" + photo + b"\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            ok,
        ),
        Case(
            "filename",
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="\xff\xfe.jpg"\r\n\r\n'
            + photo
            + b"\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            frozenset({200, 400}),
        ),  # not UTF-8
        Case("multipart", part("file", "a.jpg", photo) + b"--b--\r\n", "multipart/form-data"),  # no boundary
        Case("multipart", part("file", "a.jpg", photo) + b"--b--\r\n", "multipart/form-data; boundary=other"),
        Case("multipart", part("file", "a.jpg", photo), "multipart/form-data; boundary=b"),  # never closed
        Case("multipart", part("file", "a.jpg", photo)[: len(photo) // 2], "multipart/form-data; boundary=b"),
        Case("multipart", b"--b--\r\n", "multipart/form-data; boundary=b"),
        Case("multipart", b"", "multipart/form-data; boundary=b"),
        Case("multipart", b"garbage" * 100, "multipart/form-data; boundary=b"),
        Case("multipart", b"--b\r\n\r\n" + photo + b"\r\n--b--\r\n", "multipart/form-data; boundary=b"),
        Case(
            "multipart",
            b"--b\r\nContent-Disposition: form-data\r\n\r\n" + photo + b"\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        Case(
            "multipart",
            part("file", "a.jpg", photo, "X-Junk: " + "y" * 10_000 + "\r\n") + b"--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        Case(
            "multipart",
            part("file", "a.jpg", photo, "Content-Transfer-Encoding: base64\r\n") + b"--b--\r\n",
            "multipart/form-data; boundary=b",
        ),
        Case(
            "multipart",
            b"".join(part("file", f"{i}.jpg", b"x") for i in range(2000)) + b"--b--\r\n",
            "multipart/form-data; boundary=b",
            frozenset({400, 413}),
            unread_body=True,
        ),
        Case(
            "multipart",
            b"".join(f'--b\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode() for i in range(5000))
            + b"--b--\r\n",
            "multipart/form-data; boundary=b",
            frozenset({400, 413}),
            unread_body=True,
        ),
        Case(
            "multipart",
            part("file", "big.jpg", bytes(TRANSPORT_LIMIT)) + b"--b--\r\n",
            "multipart/form-data; boundary=b",
            frozenset({413}),
            unread_body=True,
        ),
        Case("multipart", part("file", "a.jpg", photo) + b"--b--\r\n", "multipart/form-data; boundary=" + "b" * 5000),
        Case("multipart", part("file", "a.jpg", photo) + b"--b--\r\n", "multipart/mixed; boundary=b"),
    ]
    return cases


def json_cases(photo: bytes) -> list[Case]:
    good = base64.b64encode(photo).decode()

    def body(value: Any) -> bytes:
        return json.dumps(value).encode()

    refused = [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"image": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"images": [' + b'{"a":' * 20_000 + b"1" + b"}" * 20_000 + b"]}",
        b"[" * 500 + b"]" * 500,
        b'{"image": ' + b"9" * 100_000 + b"}",
        b'{"image": NaN}',
        b'{"image": 1e999}',
        b'{"image": "\xff\xfe"}',
        b'{"image": "' + good.encode() + b'", "image": 3}',
        body({"image": None}),
        body({"image": [good]}),
        body({"image": {"data": good}}),
        body({"images": good}),
        body({"images": [[]]}),
        body({"images": [good] * 40}),
        body({"image": good, "images": [good]}),
        body({"image": "data:image/jpeg;base64"}),
        body({"image": good[: len(good) // 2]}),
        body({"image": "===="}),
        body({"image": "\u00e9" * 1000}),
        body("image"),
        body(None),
        b"",
        b"{",
    ]
    cases = [Case("json", document, "application/json", frozenset({400, 413, 415, 422})) for document in refused]
    cases.append(
        Case(
            "json",
            b'{"image": "' + b"A" * (TRANSPORT_LIMIT + 10) + b'"}',
            "application/json",
            frozenset({413}),
            unread_body=True,
        )
    )
    valid = [
        body({"image": " \n".join(good[i : i + 76] for i in range(0, len(good), 76))}),
        body({"image": "data:;base64," + good}),
        body({"image": good, "explain": {"deep": [1, 2]}}),
        b"\xef\xbb\xbf" + body({"image": good}),
        body({"images": [good, 3]}),  # one bad item: it gets its own error, the other its answer
    ]
    cases += [Case("json", document, "application/json; charset=utf-8", frozenset({200})) for document in valid]
    cases.append(Case("json", body({"image": good}), "application/json; charset=utf-16"))
    return cases


def header_cases(photo: bytes) -> list[Case]:
    return [
        Case("headers", photo, content_type)
        for content_type in [
            None,
            "",
            "image/",
            "image",
            "/",
            ";;;",
            "image/jpeg; charset=\u00ff",
            "IMAGE/JPEG",
            "text/html",
            "image/svg+xml",
            "application/x-www-form-urlencoded",
            "application/octet-stream; boundary=x",
            "image/jpeg" + "; a=b" * 300,
        ]
    ]


def random_cases(rng: random.Random, files: dict[str, bytes], count: int) -> list[Case]:
    """``count`` cases: random bytes, often behind a real signature, and damaged real files."""
    cases = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.25:
            data = rng.randbytes(int(2 ** rng.uniform(0, 13)))
            cases.append(any_form(rng, "random", data))
        elif roll < 0.4:
            cases.append(any_form(rng, "random", rng.choice(MAGIC) + rng.randbytes(rng.randint(0, 2048))))
        else:
            cases.append(any_form(rng, "damaged", damage(rng.choice(list(files.values())), rng)))
    return cases


def build_cases(total: int, seed: int = 0) -> list[Case]:
    files = base_files()
    photo = make_photo((96, 72))
    fixed = bombs() + truncations(files) + multipart_cases(photo) + json_cases(photo) + header_cases(photo)
    rng = random.Random(seed)
    cases = fixed + random_cases(rng, files, max(0, total - len(fixed)))
    rng.shuffle(cases)
    return cases


# --- sending and judging ---------------------------------------------------------------


def problem(case: Case, status: int, body: bytes) -> str | None:
    """What is wrong with an answer, or ``None``."""
    if status >= 500:
        return f"server error {status}"
    if case.allowed is not None and status not in case.allowed:
        return f"status {status}, expected one of {sorted(case.allowed)}"
    try:
        document = json.loads(body)
    except ValueError:
        return f"status {status} with a body that is not JSON"
    if status == 200:
        labelled = isinstance(document, dict) and ("label" in document or "predictions" in document)
        return None if labelled else "200 without a label"
    if 400 <= status < 500:
        error = document.get("error") if isinstance(document, dict) else None
        explained = isinstance(error, dict) and error.get("code") and error.get("message")
        return None if explained else "4xx without code and message"
    return f"unexpected status {status}"


def run_cases(url: str, cases: list[Case], concurrency: int = 8) -> list[tuple[Case, int | None, str | None]]:
    local = threading.local()

    def send(case: Case) -> tuple[Case, int | None, str | None]:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        headers = {} if case.content_type is None else {"Content-Type": case.content_type}
        if case.unread_body:
            headers["Connection"] = "close"
        try:
            response = local.session.post(f"{url}/predict", data=case.body, headers=headers, timeout=120)
        except requests.RequestException as exc:
            local.session = requests.Session()
            return case, None, f"connection error {type(exc).__name__}"
        return case, response.status_code, problem(case, response.status_code, response.content)

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(send, cases))


# --- HTTP itself, over a bare socket -------------------------------------------------------


def exchange(url: str, request: bytes) -> int | None:
    """Send raw request bytes and return the answer's status (``None`` if the server closed silently)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


def protocol_requests(photo: bytes) -> list[tuple[bytes, frozenset[int | None]]]:
    """Raw requests and the statuses each may get (``None``: closed without an answer)."""
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\n"
    bad = frozenset(range(400, 500))
    return [
        (
            head + b"Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(photo, 500),
            frozenset({200}),
        ),
        (head + b"Content-Type: image/jpeg\r\nContent-Length: abc\r\n\r\n" + photo, bad),
        (head + b"Content-Type: image/jpeg\r\nContent-Length: -5\r\n\r\n" + photo, bad),
        (head + b"Content-Type: image/jpeg\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n" + photo, bad),
        (head + b"Content-Type: image/jpeg\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", bad),
        (head + b"Content-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n" + photo, bad),
        (head + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n", bad),
        (b"POST /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", bad),
        (head + b"Bad Header Name: 1\r\n\r\n", bad),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64), bad | {None}),  # TLS on the plain port
    ]


# --- the run ---------------------------------------------------------------------------------


def log_text(server) -> str:
    server.log.flush()
    return Path(server.log.name).read_text(errors="replace")


@pytest.mark.parametrize(
    "total", [pytest.param(SHORT_CASES, id="short"), pytest.param(LONG_CASES, id="long", marks=pytest.mark.slow)]
)
def test_every_hostile_request_gets_a_json_4xx_and_no_worker_dies(pair_server, total, capsys):
    url = pair_server.url
    pids = pair_server.worker_pids()
    log_before = len(log_text(pair_server))
    photo = make_photo((160, 120))

    # A slowly sent body and an abandoned one, while the fuzz cases go through the other threads.
    slow = PendingRequest(url, "/predict", photo, "image/jpeg")
    abandoned = PendingRequest(url, "/predict", photo, "image/jpeg")
    abandoned.send(len(photo) // 3)
    slow_answer: dict = {}
    slow_thread = threading.Thread(target=lambda: (slow.send_slowly(30, 0.1), slow_answer.update(r=slow.response())))
    slow_thread.start()
    cases = build_cases(total, seed=total)
    results = run_cases(url, cases)
    protocol = [(expected, exchange(url, request)) for request, expected in protocol_requests(photo)]
    abandoned.close()
    slow_thread.join(60)

    tally = collections.Counter((case.category, status) for case, status, _ in results)
    with capsys.disabled():
        print(
            f"\nfuzz: {len(results) + len(protocol) + 2} inputs tried; (category, status): count",
            dict(sorted(tally.items(), key=str)),
        )
    failures = [(case.category, case.content_type, case.body[:80], status, why) for case, status, why in results if why]
    assert not failures, failures[:10]
    assert [status in expected for expected, status in protocol] == [True] * len(protocol), protocol
    assert slow_answer["r"][0] == 200 and slow_answer["r"][1]["label"] in ("Cat", "Dog")
    assert len(results) == len(cases) >= total
    assert sum(1 for _, status, _ in results if status == 200) > 0  # some damaged files still decode
    assert pair_server.worker_pids() == pids
    log = log_text(pair_server)[log_before:]
    for sign in ("Traceback", "unexpected error", "WORKER TIMEOUT", "was sent SIGKILL"):
        assert sign not in log
