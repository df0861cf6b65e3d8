"""Read one HTTP/1.1 request with h11 and hand it on as a plain, complete request in memory.

The worker's event loop feeds a :class:`RequestReader` the bytes of a
connection as they arrive. h11 (the reference sans-IO HTTP/1.1 parser) does
all the framing: request line, headers, ``Content-Length`` or chunked body,
trailers, where one request ends and the next begins. When a request is
complete the reader writes it again in one canonical form: its request line
and headers, without ``Transfer-Encoding``, ``Expect`` and its own
``Content-Length``, then ``Content-Length`` of the body it holds and the
body. gunicorn's parser, which serves the request in a thread, reads that
from memory: it never sees chunked framing or the socket, so it can neither
disagree with h11 about where a request ends nor wait for bytes that will
not come.
"""

from __future__ import annotations

import dataclasses

import h11

# Headers the canonical form drops: the body's framing is rewritten, and "100 Continue" is the loop's business.
_FRAMING_HEADERS = {b"content-length", b"transfer-encoding", b"expect"}


@dataclasses.dataclass(frozen=True)
class Complete:
    """A request read in full.

    Attributes:
        request: The canonical request (head and body) for gunicorn's parser.
        leftover: Bytes that came after it (the start of a pipelined request).
        close: Whether the connection must close after the answer: the body
            was too large to read (the request then declares a length over
            the limit and holds no body, so the app refuses it) or the client
            closed the connection before sending all of it.
    """

    request: bytes
    leftover: bytes = b""
    close: bool = False


@dataclasses.dataclass(frozen=True)
class Refused:
    """A request that cannot be read: answer ``status`` and close.

    Attributes:
        status: A 4xx (or 501) status for the answer.
        reason: What was wrong, for the log.
    """

    status: int
    reason: str


class Closed:
    """The client closed the connection before sending a byte of a request."""


CLOSED = Closed()


class RequestReader:
    """The framing of one request on one connection (no I/O: bytes in, outcome out).

    Args:
        max_head: Most bytes of the request line and headers.
        max_body: Most body bytes read; a larger body is not read (see :class:`Complete`).
    """

    def __init__(self, max_head: int, max_body: int):
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head)
        self.max_body = max_body
        self.received = 0  # bytes fed so far: what this request holds in memory, at most
        self.request: h11.Request | None = None
        self.declared_length: int | None = None
        self._framed = False  # the head announced a body (a length or chunked)
        self._body = bytearray()

    @property
    def started(self) -> bool:
        """Whether any byte of the request has arrived."""
        return self.received > 0

    @property
    def head_complete(self) -> bool:
        return self.request is not None

    @property
    def wants_continue(self) -> bool:
        """Whether the client waits for ``100 Continue`` before it sends the body."""
        return self._h11.they_are_waiting_for_100_continue

    def feed(self, data: bytes) -> Complete | Refused | Closed | None:
        """Take the next bytes of the connection (``b""``: the client closed it).

        Returns:
            The outcome once there is one, or ``None`` while more bytes are needed.
        """
        self.received += len(data)
        self._h11.receive_data(data)
        try:
            while True:
                event = self._h11.next_event()
                if event is h11.NEED_DATA:
                    return None
                if event is h11.PAUSED:  # cannot come before the end of the request; never wait on it
                    return Refused(400, "the request cannot be read")
                if isinstance(event, h11.Request):
                    self.request = event
                    self.declared_length = _content_length(event)
                    framing = {name for name, _ in event.headers} & {b"content-length", b"transfer-encoding"}
                    if len(framing) == 2:
                        # h11 would follow Transfer-Encoding; a proxy in front may have followed the length.
                        return Refused(400, "both Content-Length and Transfer-Encoding")
                    self._framed = bool(framing)
                    if self.declared_length is not None and self.declared_length > self.max_body:
                        return self._too_large(self.declared_length)
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > self.max_body:
                        return self._too_large(len(self._body))
                elif isinstance(event, h11.EndOfMessage):
                    leftover, _ = self._h11.trailing_data
                    return Complete(self._canonical(bytes(self._body)), leftover=bytes(leftover))
                elif isinstance(event, h11.ConnectionClosed):
                    return CLOSED
        except h11.RemoteProtocolError as exc:
            if not data and self.request is not None and self.declared_length is not None:
                # The client stopped sending mid-body: the app answers a body shorter than its length.
                return Complete(self._canonical(bytes(self._body), self.declared_length, close=True), close=True)
            return Refused(exc.error_status_hint, str(exc))

    def _too_large(self, length: int) -> Complete:
        """The head alone, declaring a length over the limit: the app refuses it without a body."""
        return Complete(self._canonical(b"", max(length, self.max_body + 1), close=True), close=True)

    def _canonical(self, body: bytes, length: int | None = None, close: bool = False) -> bytes:
        request = self.request
        assert request is not None
        lines = [b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)]
        for name, value in request.headers.raw_items():
            lowered = name.lower()
            if lowered in _FRAMING_HEADERS or (close and lowered == b"connection"):
                continue
            lines.append(name + b": " + value)
        length = len(body) if length is None else length
        if length or self._framed:
            lines.append(b"Content-Length: %d" % length)
        if close:
            lines.append(b"Connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _content_length(request: h11.Request) -> int | None:
    """The length a request declares (h11 has checked that there is at most one, and valid)."""
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)
    return None
