"""A gunicorn worker whose event loop reads requests and writes answers; threads only run the app.

gunicorn's ``gthread`` worker gives a connection to one of its threads as soon
as the first byte arrives; the thread then reads the request and writes the
answer with blocking calls and no overall deadline. A client that sends one
byte every few seconds, or that never reads what it is sent, holds that
thread for as long as it likes, and a few such clients hold them all.

:class:`BufferingWorker` keeps ``gthread``'s thread pool but moves all socket
work into its event loop, as a buffering proxy (nginx) in front would:

* **reading**: h11 frames each request (:mod:`catdog.web.framing`); a thread
  gets the request only once it is complete, in memory, in a canonical form
  that gunicorn's parser reads without touching the socket;
* **writing**: the thread writes the answer into memory; the loop sends it
  as the client reads it;
* **deadlines**: a request's head must arrive within ``header_timeout``
  seconds of its first byte; its body within ``body_timeout`` seconds plus
  one per ``min_body_rate`` bytes it *declares* (fixed when the head
  arrives: sending bytes does not extend it), and at ``min_body_rate`` on
  average after the first ``body_timeout`` seconds, so a trickle is cut
  early; no request may go ``idle_timeout`` seconds without a byte; an answer must be read within
  ``write_timeout`` seconds; a kept-alive connection waits ``keepalive``
  seconds for its next request. A request that misses its deadline gets
  ``408``; an answer that misses it is cut;
* **taking turns**: a worker that reaches ``max_requests`` is replaced only
  if no other worker was in the last few seconds (:mod:`catdog.web.recycling`);
* **budgets**: the bytes one worker holds for requests being read and
  answers being sent have a budget (``max_buffered``); a body that would
  exceed it is answered ``503`` at once. When all ``worker_connections``
  slots are taken, a new connection takes the slot of the longest-idle one
  (no request started), or, if every connection is busy, is answered ``503``
  at once instead of waiting unseen in the listen backlog.

Over TLS, or with HTTP/2 prior knowledge, the worker behaves exactly like
``gthread`` (the README's command uses neither).

Settings come from the environment (``gunicorn.conf.py`` checks them):
``GUNICORN_HEADER_TIMEOUT``, ``GUNICORN_BODY_TIMEOUT``,
``GUNICORN_IDLE_TIMEOUT``, ``GUNICORN_WRITE_TIMEOUT`` (seconds),
``GUNICORN_MIN_BODY_RATE`` (bytes per second) and ``GUNICORN_MAX_BUFFERED``
(bytes).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import os
import selectors
import socket
import struct
import threading
import time
from functools import partial
from http import HTTPStatus

from gunicorn.http.parser import RequestParser
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker

from catdog.web.error_body import error_body
from catdog.web.framing import Closed, Complete, Refused, RequestReader
from catdog.web.recycling import RecycleGate

HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
IDLE_TIMEOUT = 10.0
WRITE_TIMEOUT = 10.0
MIN_BODY_RATE = 16 * 1024
MAX_BUFFERED = 64 * 1024 * 1024
READ_SIZE = 64 * 1024
LINGER_TIMEOUT = 2.0  # a closing connection's unread bytes are drained this long, so its answer is not reset
# A proxy that buffered a whole over-limit upload (nginx) sends all of it after our early 413; closing with it
# unread resets the connection before the proxy reads the answer, and it answers 502 instead. Draining is cheap
# (read and drop) and the timeout above bounds it.
LINGER_BYTES = 16 * 1024 * 1024

_CODES = {400: "bad_request", 408: "request_timeout", 431: "header_too_large", 501: "not_implemented"}
_CODES.update({503: "busy", 505: "http_version_not_supported", 500: "internal_error", 414: "uri_too_long"})
_CODES.update({417: "expectation_failed", 403: "forbidden"})
# What gunicorn's parser refuses after h11 framed the request (a lowercase method, a control byte in a header
# value, more header fields than limit_request_fields, ...), said in the API's words; gunicorn chooses the status.
_PARSER_MESSAGES = {
    400: "the request is not valid HTTP/1.1",
    403: "the request is forbidden",
    414: "the request line is too long",
    417: "the request's expectation cannot be met",
    431: "the request's header fields are too many or too large",
    500: "something went wrong on our side; please try again",
    501: "the request's transfer coding is not supported",
}


def error_answer(status: int, message: str) -> bytes:
    """A complete ``Connection: close`` answer with the API's JSON error body."""
    code = _CODES.get(status, "bad_request")
    body = json.dumps(error_body(code, message)).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


_TIMEOUT = error_answer(408, "the request did not arrive in time")
_BUSY = error_answer(503, "the server is busy; try again in a moment")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _State(enum.Enum):
    READING = "reading"  # the loop reads a request
    SERVING = "serving"  # a thread runs the app
    WRITING = "writing"  # the loop sends the answer
    CLOSING = "closing"  # write side shut; unread bytes drained before closing


class _Client:
    """The loop's view of one HTTP/1.1 connection."""

    __slots__ = (
        "conn",
        "state",
        "reader",
        "deadline",
        "idle_deadline",
        "body_started",
        "body_cap",
        "answer",
        "sent",
        "then_read",
        "held",
    )

    def __init__(self, conn: TConn):
        self.conn = conn
        self.state = _State.READING
        self.reader: RequestReader | None = None
        self.deadline = 0.0
        self.idle_deadline = float("inf")
        self.body_started = 0.0  # when the head was complete
        self.body_cap = 0.0  # the body's deadline at the latest, fixed then
        self.answer = b""
        self.sent = 0
        self.then_read: bytes | None = None  # after the answer: read the next request, starting with these bytes
        self.held = 0  # bytes counted against the worker's budget


class _AnswerBuffer:
    """Stands in for the socket while a thread writes an answer: everything written stays in memory."""

    def __init__(self):
        self.data = bytearray()

    def sendall(self, data) -> None:
        self.data += data

    def send(self, data) -> int:
        self.data += data
        return len(data)

    def sendfile(self, file, offset: int = 0, count: int | None = None) -> int:
        file.seek(offset)
        data = file.read() if count is None else file.read(count)
        self.data += data
        return len(data)

    def shutdown(self, how: int) -> None:
        """An answer cut off mid-way: what was written is sent, then the connection closes."""

    def settimeout(self, timeout) -> None:
        """Writing to memory never waits."""

    def gettimeout(self) -> float:
        return 0.0

    def recv(self, size: int) -> bytes:
        return b""

    def close(self) -> None:
        """The loop closes the real socket."""


class BufferingWorker(ThreadWorker):
    """``gthread`` with every read and write done by the event loop, under deadlines and budgets."""

    recycle_gate: RecycleGate | None = None  # set by init_process when the server made one

    def init_process(self):
        from catdog.config import load_config
        from catdog.web.uploads import transport_limit

        self.header_timeout = _float_from_env("GUNICORN_HEADER_TIMEOUT", HEADER_TIMEOUT)
        self.body_timeout = _float_from_env("GUNICORN_BODY_TIMEOUT", BODY_TIMEOUT)
        self.idle_timeout = _float_from_env("GUNICORN_IDLE_TIMEOUT", IDLE_TIMEOUT)
        self.write_timeout = _float_from_env("GUNICORN_WRITE_TIMEOUT", WRITE_TIMEOUT)
        self.min_body_rate = _float_from_env("GUNICORN_MIN_BODY_RATE", MIN_BODY_RATE)
        self.max_buffered = int(_float_from_env("GUNICORN_MAX_BUFFERED", MAX_BUFFERED))
        # The most body bytes worth holding: the app refuses anything larger without reading it.
        self.max_body = transport_limit(load_config().serving.max_upload_bytes)
        cfg = self.cfg
        self.max_head = cfg.limit_request_line + cfg.limit_request_fields * (cfg.limit_request_field_size + 2) + 4
        self.clients: dict[int, _Client] = {}  # by the TConn's id
        self.buffered = 0
        self.recycle_gate = RecycleGate.from_env()
        self.recycle_lock = threading.Lock()
        super().init_process()

    # --- connections in and out ------------------------------------------------------------

    def set_accept_enabled(self, enabled):
        """Keep accepting while alive: a connection past the slots is answered, not left in the backlog."""
        super().set_accept_enabled(enabled or self.alive)

    def accept(self, listener):
        """Accept a connection; past ``worker_connections``, free an idle slot or answer ``503``."""
        try:
            sock, address = listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK, errno.EMFILE, errno.ENFILE):
                return
            raise
        if self.nr_conns >= self.worker_connections and not self._free_a_slot():
            sock.setblocking(False)
            _send_quietly(sock, _BUSY)
            _close_quietly(sock)
            return
        self.nr_conns += 1
        self.enqueue_req(TConn(self.cfg, sock, address, listener.getsockname()))

    def _free_a_slot(self) -> bool:
        """Close the connection that has waited longest without starting a request, if any."""
        idle = [c for c in self.clients.values() if c.state is _State.READING and not c.reader.started]
        if not idle:
            return False
        self._close(min(idle, key=lambda c: c.deadline))
        return True

    def enqueue_req(self, conn):
        """Read the connection's next request in the event loop; a thread gets it once complete."""
        if self.cfg.is_ssl or negotiation.prior_knowledge_allowed(self.cfg, conn.client):
            super().enqueue_req(conn)
            return
        client = _Client(conn)
        self.clients[id(conn)] = client
        conn.sock.setblocking(False)
        self._read(client, b"", self.header_timeout)

    # --- reading ------------------------------------------------------------------------------

    def _read(self, client: _Client, leftover: bytes, wait: float) -> None:
        """Start reading the next request; ``wait`` seconds for its first byte."""
        client.state = _State.READING
        client.reader = RequestReader(self.max_head, self.max_body)
        client.deadline = time.monotonic() + wait
        client.idle_deadline = float("inf")
        self.poller.register(client.conn.sock, selectors.EVENT_READ, partial(self._on_readable, client))
        if leftover:
            self._take(client, leftover)

    def _on_readable(self, client: _Client, sock) -> None:
        data = _receive(sock)
        if data is None:
            return
        if data and self.buffered + len(data) > self.max_buffered:
            self._refuse(client, _BUSY)
            return
        self._take(client, data)

    def _take(self, client: _Client, data: bytes) -> None:
        reader = client.reader
        now = time.monotonic()
        if data and not reader.started:
            client.deadline = now + self.header_timeout
        head_before = reader.head_complete
        outcome = reader.feed(data)
        self._hold(client, client.held + len(data))
        if isinstance(outcome, Complete):
            self._serve(client, outcome)
        elif isinstance(outcome, Refused):
            self.log.debug("Refused a request (%s): %s", outcome.status, outcome.reason)
            self._refuse(client, error_answer(outcome.status, "the request is not valid HTTP/1.1"))
        elif isinstance(outcome, Closed):
            self._close(client)
        else:
            client.idle_deadline = now + self.idle_timeout
            if reader.head_complete and not head_before:
                # Fixed when the head arrives: the bytes a client sends later do not extend it.
                declared = reader.declared_length if reader.declared_length is not None else self.max_body
                client.body_started = now
                client.body_cap = now + self.body_timeout + min(declared, self.max_body) / self.min_body_rate
            if reader.head_complete:
                keeping_up = client.body_started + self.body_timeout + reader.received / self.min_body_rate
                client.deadline = min(client.body_cap, keeping_up)
            if reader.head_complete and not head_before and reader.wants_continue:
                _send_quietly(client.conn.sock, _CONTINUE)

    def _serve(self, client: _Client, complete: Complete) -> None:
        """Hand a complete request to a thread; gunicorn's parser reads it from memory."""
        self._unregister(client)
        client.state = _State.SERVING
        client.answer = b""
        client.then_read = None if complete.close else complete.leftover
        self._hold(client, len(complete.request) + len(complete.leftover))
        conn = client.conn
        conn.parser = RequestParser(self.cfg, [complete.request], conn.client)
        conn.initialized = True
        conn.data_ready = True
        super().enqueue_req(conn)

    # --- the app, in a thread -------------------------------------------------------------------

    def handle_request(self, req, conn):
        """Run the app with the answer written into memory (in a thread); the loop sends it."""
        self._take_turns()
        client = self.clients.get(id(conn))
        if client is None:
            return super().handle_request(req, conn)
        sock, buffer = conn.sock, _AnswerBuffer()
        conn.sock = buffer
        try:
            return super().handle_request(req, conn)
        finally:
            conn.sock = sock
            client.answer = bytes(buffer.data)

    def handle_error(self, req, client, addr, exc):
        """gunicorn's status and log line for a request it refuses, with the API's JSON body instead of its HTML.

        The answer goes out through the loop (under the write deadline) like any other.
        """
        written = _AnswerBuffer()
        super().handle_error(req, written, addr, exc)
        try:
            status = int(bytes(written.data).split(b" ", 2)[1])
        except (IndexError, ValueError):
            status = 500
        answer = error_answer(status, _PARSER_MESSAGES.get(status, HTTPStatus(status).phrase))
        owner = next((c for c in self.clients.values() if c.conn.sock is client), None)
        if owner is not None and owner.state is _State.SERVING:
            owner.answer = answer
        else:  # a TLS or HTTP/2 connection, which gthread serves itself
            _send_quietly(client, answer)

    def _take_turns(self) -> None:
        """Before the request that would end this worker, ask the gate; if another worker just left, serve on."""
        if self.recycle_gate is None or not self.alive:
            return
        with self.recycle_lock:
            if self.nr + 1 < self.max_requests:
                return
            allowed, since = self.recycle_gate.may_leave()
            if not allowed:
                # Ask again a little later: a tenth of max_requests, as gunicorn's own jitter.
                self.max_requests = self.nr + 1 + max(1, self.cfg.max_requests // 10)
                self.log.info("Restart postponed: another worker left %.1f s ago", since)

    def finish_request(self, conn, fs):
        """Send the answer the thread wrote, then read the next request or close (in the loop)."""
        client = self.clients.get(id(conn))
        if client is None:
            super().finish_request(conn, fs)
            return
        try:
            keepalive = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keepalive = False
        conn.sock.setblocking(False)
        if not keepalive or not self.alive:
            client.then_read = None
        self._write(client, client.answer)

    # --- writing --------------------------------------------------------------------------------

    def _write(self, client: _Client, answer: bytes) -> None:
        client.state = _State.WRITING
        client.answer, client.sent = answer, 0
        client.deadline = time.monotonic() + self.write_timeout
        self._hold(client, len(answer) + len(client.then_read or b""))
        self._on_writable(client, client.conn.sock, registered=False)

    def _on_writable(self, client: _Client, sock, registered: bool = True) -> None:
        try:
            while client.sent < len(client.answer):
                client.sent += sock.send(memoryview(client.answer)[client.sent : client.sent + READ_SIZE * 4])
        except (BlockingIOError, InterruptedError):
            if not registered:
                self.poller.register(sock, selectors.EVENT_WRITE, partial(self._on_writable, client))
            return
        except OSError:
            self._close(client)
            return
        if registered:
            self._unregister(client)
        leftover = client.then_read
        client.answer = b""
        self._hold(client, 0)
        if leftover is None:
            self._linger(client)
        else:
            self._read(client, leftover, self.cfg.keepalive)

    def _refuse(self, client: _Client, answer: bytes) -> None:
        """Answer without the app, then close."""
        self._unregister(client)
        client.then_read = None
        self._write(client, answer)

    # --- closing --------------------------------------------------------------------------------

    def _linger(self, client: _Client) -> None:
        """Half-close, then drain what the client still sends (briefly), so it reads the answer before a reset."""
        try:
            client.conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(client)
            return
        client.state = _State.CLOSING
        client.deadline = time.monotonic() + LINGER_TIMEOUT
        client.sent = 0
        self._hold(client, 0)
        self.poller.register(client.conn.sock, selectors.EVENT_READ, partial(self._on_lingering, client))

    def _on_lingering(self, client: _Client, sock) -> None:
        data = _receive(sock)
        if data is None:
            return
        client.sent += len(data)
        if not data or client.sent > LINGER_BYTES:
            self._close(client)

    def _close(self, client: _Client) -> None:
        self._unregister(client)
        self._hold(client, 0)
        self.clients.pop(id(client.conn), None)
        self.nr_conns -= 1
        _close_quietly(client.conn.sock)

    def _abort(self, client: _Client) -> None:
        """Close with a reset: an answer not read in time is dropped, not left to the kernel.

        A plain close would queue the FIN behind the unsent answer: the kernel
        would keep up to a full send buffer (megabytes) per connection for a
        client that never reads, and that client would never see the end.
        """
        with contextlib.suppress(OSError):
            client.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._close(client)

    def _unregister(self, client: _Client) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(client.conn.sock)

    def _hold(self, client: _Client, count: int) -> None:
        """Count ``count`` bytes held for ``client`` against the worker's budget (in place of what it held)."""
        self.buffered += count - client.held
        client.held = count

    # --- deadlines --------------------------------------------------------------------------------

    def murder_pending(self):
        """Answer ``408`` to requests past their deadline, cut answers not read in time, close idle connections."""
        now = time.monotonic()
        for client in list(self.clients.values()):
            if client.state is _State.SERVING:
                continue
            stopping_idle = not self.alive and client.state is _State.READING and not client.reader.started
            if client.state is _State.WRITING and client.deadline <= now:
                self._abort(client)
            elif stopping_idle or (client.state is not _State.READING and client.deadline <= now):
                self._close(client)
            elif client.state is _State.READING and min(client.deadline, client.idle_deadline) <= now:
                if client.reader.started:
                    self._refuse(client, _TIMEOUT)
                else:
                    self._close(client)
        super().murder_pending()


def _send_quietly(sock, data: bytes) -> None:
    """Send a short answer if the socket takes it now; a client that is gone is no error."""
    with contextlib.suppress(OSError):
        sock.send(data)


def _close_quietly(sock) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def _float_from_env(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    return float(text) if text else default


def _receive(sock) -> bytes | None:
    """What a non-blocking socket holds now: ``b""`` when the peer closed or failed, None when nothing yet."""
    try:
        return sock.recv(READ_SIZE)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""
