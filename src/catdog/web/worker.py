"""A gunicorn worker that reads each request in full before a thread serves it.

gunicorn's ``gthread`` worker gives a connection to one of its threads as soon
as the first byte arrives; the thread then reads the head and the body with
blocking reads and no overall deadline. A client that sends one byte every
few seconds holds that thread for as long as it likes, and a few such clients
hold them all: the service stops answering, ``/health`` included.

:class:`BufferingWorker` does what a buffering proxy (nginx) in front would
do, inside the worker: its event loop reads every request, head and body,
without blocking and into memory, and hands the connection to a thread only
when the whole request is there. A slow client then costs a buffer and a file
descriptor, never a thread. Deadlines bound how long a request may take to
arrive, and a request that misses its deadline is answered ``408`` and closed:

* the head (request line and headers) within ``header_timeout`` seconds of
  its first byte (or of the connection's opening);
* the body within ``body_timeout`` seconds after the head, plus one second
  for every ``min_body_rate`` bytes received, so a large upload on a slow but
  honest link still arrives while a trickle is cut off.

Bodies larger than the app accepts (``MAX_CONTENT_LENGTH``) are not buffered:
the thread gets the request once its head is in and the app refuses it by its
``Content-Length``. Over TLS, or with HTTP/2 prior knowledge, the worker
behaves exactly like ``gthread`` (the README's command uses neither).

Settings come from the environment (``gunicorn.conf.py`` checks them):
``GUNICORN_HEADER_TIMEOUT``, ``GUNICORN_BODY_TIMEOUT`` (seconds) and
``GUNICORN_MIN_BODY_RATE`` (bytes per second).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from functools import partial

from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import ThreadWorker

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
MIN_BODY_RATE = 16 * 1024
READ_SIZE = 64 * 1024
MAX_CHUNK_LINE = 1024  # a chunk-size line longer than this is garbage, not a size

_TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_TOO_LARGE_HEAD = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Incoming:
    """A request being read into memory by the event loop."""

    __slots__ = ("conn", "buffer", "deadline", "head_end", "body_end", "chunk_at", "body_started")

    def __init__(self, conn, buffered: bytes, deadline: float):
        self.conn = conn
        self.buffer = bytearray(buffered)
        self.deadline = deadline
        self.head_end: int | None = None  # offset just past the blank line ending the head
        self.body_end: int | None = None  # offset just past a body of known length
        self.chunk_at: int | None = None  # offset of the next chunk-size line of a chunked body
        self.body_started = 0.0  # when the head was complete


class BufferingWorker(ThreadWorker):
    """``gthread`` with requests read in full, under deadlines, before a thread takes them."""

    def init_process(self):
        from catdog.config import load_config
        from catdog.web.uploads import transport_limit

        self.header_timeout = _float_from_env("GUNICORN_HEADER_TIMEOUT", HEADER_TIMEOUT)
        self.body_timeout = _float_from_env("GUNICORN_BODY_TIMEOUT", BODY_TIMEOUT)
        self.min_body_rate = _float_from_env("GUNICORN_MIN_BODY_RATE", MIN_BODY_RATE)
        # The most body bytes worth holding: the app refuses anything larger without reading it.
        self.max_body = transport_limit(load_config().serving.max_upload_bytes)
        cfg = self.cfg
        self.max_head = cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4
        self.incoming: dict[int, _Incoming] = {}
        super().init_process()

    def enqueue_req(self, conn):
        """Read the connection's next request in the event loop; a thread gets it once complete."""
        if self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.sock.setblocking(False)
        incoming = _Incoming(conn, buffered, time.monotonic() + self.header_timeout)
        self.incoming[conn.sock.fileno()] = incoming
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, incoming))
        if buffered:
            self._progress(incoming)

    def murder_pending(self):
        """Close connections whose request missed its deadline, then gthread's idle ones."""
        now = time.monotonic()
        for incoming in [i for i in self.incoming.values() if i.deadline <= now]:
            self._drop(incoming, _TIMEOUT_ANSWER)
        super().murder_pending()

    def _on_readable(self, incoming: _Incoming, sock) -> None:
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if incoming.head_end is not None:
                # The client stopped sending (perhaps only half-closed): the app
                # answers a body shorter than its Content-Length with a 400.
                self._hand_over(incoming)
            else:
                self._drop(incoming, None)
            return
        if incoming.head_end is None and not incoming.buffer:
            # The head's deadline runs from its first byte: an idle kept-alive
            # connection is gthread's keepalive timeout's business.
            incoming.deadline = time.monotonic() + self.header_timeout
        incoming.buffer += data
        self._progress(incoming)

    def _progress(self, incoming: _Incoming) -> None:
        """Hand the request over if it is complete; send ``100 Continue`` when the head asks for it."""
        buffer = incoming.buffer
        if incoming.head_end is None:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self.max_head:
                    self._drop(incoming, _TOO_LARGE_HEAD)
                return
            incoming.head_end = end + 4
            length, chunked, expect = _framing(bytes(buffer[:end]))
            incoming.body_started = time.monotonic()
            incoming.deadline = incoming.body_started + self.body_timeout
            if chunked:
                incoming.chunk_at = incoming.head_end
            elif length is None or length > self.max_body:
                # No body, a malformed framing gunicorn's parser will refuse,
                # or a body the app refuses by its length: nothing to wait for.
                self._hand_over(incoming)
                return
            else:
                incoming.body_end = incoming.head_end + length
            if expect and len(buffer) == incoming.head_end:
                _send_quietly(incoming.conn.sock, _CONTINUE)
        body_bytes = len(buffer) - incoming.head_end
        if incoming.chunk_at is not None:
            incoming.chunk_at, done = _scan_chunks(buffer, incoming.chunk_at)
            if done or body_bytes > self.max_body:
                self._hand_over(incoming)
                return
        elif len(buffer) >= incoming.body_end:
            self._hand_over(incoming)
            return
        incoming.deadline = incoming.body_started + self.body_timeout + body_bytes / self.min_body_rate

    def _hand_over(self, incoming: _Incoming) -> None:
        conn = incoming.conn
        self._forget(incoming)
        conn.sock.setblocking(True)
        if conn.parser is None:
            conn.init()
        conn.parser.unreader.unread(bytes(incoming.buffer))
        conn.data_ready = True  # gthread must not wait for the socket: the request is in memory
        super().enqueue_req(conn)

    def _drop(self, incoming: _Incoming, answer: bytes | None) -> None:
        self._forget(incoming)
        if answer is not None:
            _send_quietly(incoming.conn.sock, answer)
        self.nr_conns -= 1
        incoming.conn.close()

    def _forget(self, incoming: _Incoming) -> None:
        sock = incoming.conn.sock
        self.incoming.pop(sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(sock)


def _framing(head: bytes) -> tuple[int | None, bool, bool]:
    """Return (Content-Length, chunked, expects 100-continue) of a request head.

    A head gunicorn's parser would refuse (two lengths, a bad length, a
    length beside chunked) reads as "no body": the thread then answers 400.
    """
    lengths, chunked, expect = [], False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding":
            chunked = chunked or value.split(b",")[-1].strip() == b"chunked"
        elif name == b"expect":
            expect = value == b"100-continue"
    if chunked:
        return None, not lengths, expect
    if len(lengths) != 1 or not lengths[0].isdigit():
        return None, False, expect
    return int(lengths[0]), False, expect


def _scan_chunks(buffer: bytearray, at: int) -> tuple[int, bool]:
    """Skip the complete chunks of a chunked body from offset ``at``.

    Returns:
        The offset of the first chunk not yet complete, and whether the body
        (last chunk and trailers) is complete. Malformed framing counts as
        complete: gunicorn's parser refuses it with 400 without waiting.
    """
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return at, len(buffer) - at > MAX_CHUNK_LINE
        size_text = bytes(buffer[at:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            return at, True
        if size == 0:
            # Trailers follow the last chunk, up to an empty line.
            return at, buffer.find(b"\r\n\r\n", line_end) >= 0
        following = line_end + 2 + size + 2
        if len(buffer) < following:
            return at, False
        at = following


def _send_quietly(sock, data: bytes) -> None:
    """Send a short answer if the socket takes it now; a client that is gone is no error."""
    # A full send buffer or a client that left: the answer was a courtesy.
    with contextlib.suppress(OSError):
        sock.send(data)


def _float_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    return float(text) if text else default
