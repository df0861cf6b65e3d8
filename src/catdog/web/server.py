"""Run the app under gunicorn in a child process, on a free port of 127.0.0.1.

For the end-to-end tests and the benchmark: they talk to the real server
exactly as a client would. The server reads ``gunicorn.conf.py`` and gets its
bind address, workers and model path from the environment.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO

from catdog.config import source_checkout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerError(RuntimeError):
    """gunicorn exited or did not become ready in time."""


class GunicornServer:
    """``gunicorn -c gunicorn.conf.py app:app`` serving one model on 127.0.0.1.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        model_path: The model every worker loads (passed as ``CATDOG__MODEL__PATH``).
        log: Where gunicorn's output goes (a file opened for writing).
        workers: Worker processes.
        threads: Threads per worker.
        env: Extra environment variables.
        root: Folder holding ``app.py`` and ``gunicorn.conf.py``; defaults to the source checkout
            catdog runs from (they are not part of the installed package).

    Raises:
        ServerError: No ``root`` was given and catdog is not run from a source checkout.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        log: IO,
        *,
        workers: int = 1,
        threads: int = 2,
        env: Mapping[str, str] | None = None,
        root: Path | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root = root or source_checkout()
        if self.root is None:
            raise ServerError("catdog is installed, not run from a source checkout: pass root, the folder of app.py")
        self.log = log
        self.env = {
            **os.environ,
            "CATDOG__MODEL__PATH": str(model_path),
            "CATDOG_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": str(workers),
            "GUNICORN_THREADS": str(threads),
            "GUNICORN_TIMEOUT": "120",
            "GUNICORN_GRACEFUL_TIMEOUT": "10",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {}),
        }
        self.process: subprocess.Popen | None = None

    def start(self, ready_timeout: float = 180.0, *, ready_path: str = "/ready") -> GunicornServer:
        """Start gunicorn and wait until ``ready_path`` answers 200.

        ``ready_path="/health"`` waits only for a worker to answer, with or without a model.

        Raises:
            ServerError: gunicorn exited, or was not ready within ``ready_timeout`` seconds.
        """
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"]
        self.process = subprocess.Popen(command, cwd=self.root, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"gunicorn exited with status {self.process.returncode} before it was ready")
            try:
                with urllib.request.urlopen(f"{self.url}{ready_path}", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"gunicorn was not ready after {ready_timeout:g} s")

    def worker_pids(self) -> list[int]:
        """Process ids of the workers (the master's children)."""
        import psutil  # tests and benchmarks only; not in the serving-only install

        if self.process is None:
            return []
        try:
            return sorted(child.pid for child in psutil.Process(self.process.pid).children())
        except psutil.NoSuchProcess:
            return []

    def stop(self, timeout: float = 30.0) -> int | None:
        """Ask gunicorn to shut down gracefully (SIGTERM) and return its exit status.

        A server that does not exit within ``timeout`` seconds is killed.
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> GunicornServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
