"""HTTP over a bare socket, for what a client library will not do.

Send a request's headers and part of its body, keep it waiting in the
server, send the rest later or slowly, and read the answer: the fault tests
(requests in flight during a shutdown or reload) and the fuzz run (a slowly
sent body) use it. ``chunked`` frames a body by hand, for servers that must
send or receive one.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse

import psutil


def chunked(body: bytes, size: int) -> bytes:
    """``body`` in ``Transfer-Encoding: chunked`` framing, ``size`` bytes a chunk, with the last chunk."""
    pieces = (body[at : at + size] for at in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


class PendingRequest:
    """A POST whose body is sent in pieces on one connection (``Connection: close``).

    Args:
        url: The server's base URL (``http://127.0.0.1:PORT``).
        path: The request path.
        body: The whole body; ``Content-Length`` announces all of it.
        content_type: Its Content-Type.
        timeout: Seconds any socket operation may take.
    """

    def __init__(self, url: str, path: str, body: bytes, content_type: str, timeout: float = 60.0):
        address = urllib.parse.urlsplit(url)
        self.body = body
        self.sent = 0
        self.sock = socket.create_connection((address.hostname, address.port), timeout=timeout)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self.sock.sendall(head.encode("latin-1"))

    def accepted(self) -> bool:
        """Whether a server process has accepted the connection (Linux: its socket has an inode)."""
        client, server = self.sock.getsockname(), self.sock.getpeername()
        for conn in psutil.net_connections(kind="tcp4"):
            if conn.laddr and conn.raddr and (conn.laddr.port, conn.raddr.port) == (server[1], client[1]):
                # Before accept() the connection waits in the kernel's queue, owned by no process.
                return conn.pid is not None
        return False

    def send(self, count: int | None = None) -> None:
        """Send the next ``count`` bytes of the body (all that is left if ``None``)."""
        end = len(self.body) if count is None else min(self.sent + count, len(self.body))
        self.sock.sendall(self.body[self.sent : end])
        self.sent = end

    def send_slowly(self, pieces: int, pause: float) -> None:
        """Send what is left in ``pieces`` pieces, ``pause`` seconds apart."""
        step = max(1, -(-(len(self.body) - self.sent) // pieces))
        while self.sent < len(self.body):
            time.sleep(pause)
            self.send(step)

    def response(self) -> tuple[int, dict | None]:
        """Read the answer: its status and its JSON body (``None`` if it is not JSON)."""
        answer = http.client.HTTPResponse(self.sock)
        try:
            answer.begin()
            data = answer.read()
        finally:
            self.close()
        try:
            return answer.status, json.loads(data)
        except ValueError:
            return answer.status, None

    def close(self) -> None:
        self.sock.close()
