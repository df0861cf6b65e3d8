"""Workers take turns being replaced, so one is always serving.

gunicorn replaces a worker after ``max_requests`` requests (plus a random
jitter of up to a tenth) so that memory it once needed is given back. Under a
flood every worker reaches its count at nearly the same moment: with two
workers sharing the load evenly, a jitter of up to 100 requests rarely
separates them by more than the second or so a new worker needs to load its
model, and for that time no worker answers.

A :class:`RecycleGate` is one small file shared by the workers of a server
(``gunicorn.conf.py`` makes it and names it in ``CATDOG_RECYCLE_GATE``). A
worker that reaches its count asks the gate first; the gate lets it go only
if no other worker went in the last ``spacing`` seconds, and otherwise the
worker serves on and asks again a few requests later.
"""

from __future__ import annotations

import fcntl
import os
import struct
import time

GATE_ENV = "CATDOG_RECYCLE_GATE"
SPACING_ENV = "GUNICORN_RECYCLE_SPACING"
SPACING = 5.0  # seconds: a new worker loads and warms up its model in about one
_STAMP = struct.Struct("<d")


class RecycleGate:
    """The time the last worker of a server left to be replaced, in a file all its workers lock.

    Args:
        path: The shared file (created if missing).
        spacing: Seconds that must pass after one worker leaves before another may.
    """

    def __init__(self, path: str | os.PathLike, spacing: float = SPACING):
        self.path = os.fspath(path)
        self.spacing = spacing

    @classmethod
    def from_env(cls, environ=None) -> RecycleGate | None:
        """The gate ``gunicorn.conf.py`` made, or None when the server runs without it."""
        environ = os.environ if environ is None else environ
        path = environ.get(GATE_ENV)
        if not path:
            return None
        text = environ.get(SPACING_ENV, "").strip()
        return cls(path, float(text) if text else SPACING)

    def may_leave(self, now: float | None = None) -> tuple[bool, float]:
        """Whether a worker may leave now; if it may, that is recorded for the others.

        Returns:
            ``(allowed, seconds since the last worker left)`` (infinite if none has).
        """
        now = time.time() if now is None else now
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when the file is closed
            data = os.pread(fd, _STAMP.size, 0)
            since = now - _STAMP.unpack(data)[0] if len(data) == _STAMP.size else float("inf")
            # A clock set back makes "since" negative: treat that as long ago rather than block for good.
            allowed = since >= self.spacing or since < 0
            if allowed:
                os.pwrite(fd, _STAMP.pack(now), 0)
            return allowed, since
        finally:
            os.close(fd)
