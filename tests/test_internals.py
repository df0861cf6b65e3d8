"""The private parts of pinned libraries that catdog leans on, checked on the real objects.

A version bump that renames or changes one fails here, with the module to
revisit, instead of silently (an override nobody calls any more) or deep in a
server test. requirements*.txt pin these libraries exactly, and pyproject.toml
keeps them to the tested minor release.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import select
import selectors
import socket

import gunicorn
import pydantic_settings
import pytest
from gunicorn.config import Config
from gunicorn.glogging import Logger
from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import TConn, ThreadWorker
from pydantic_settings import EnvSettingsSource
from pydantic_settings.sources.utils import parse_env_vars

from catdog.config import _YamlEnvSource
from catdog.errors import ConfigError
from catdog.web.framing import Complete, RequestReader
from catdog.web.worker import BufferingWorker, _Client, _State

REVISIT_CONFIG = (
    f"pydantic-settings {pydantic_settings.__version__} changed what catdog.config._YamlEnvSource overrides "
    "(EnvSettingsSource._load_env_vars, decode_complex_value, env_vars, sources.utils.parse_env_vars): revisit it"
)
REVISIT_WORKER = (
    f"gunicorn {gunicorn.__version__} changed the ThreadWorker internals catdog.web.worker.BufferingWorker builds on "
    "(its overridden methods, nr_conns, TConn's parser/initialized/data_ready, RequestParser over a list): revisit it"
)


@contextlib.contextmanager
def revisit(message: str):
    """Turn any failure inside into one that names the module to revisit."""
    try:
        yield
    except Exception as exc:
        pytest.fail(f"{message}: {exc!r}")


# --- pydantic-settings: catdog.config reads a given mapping, not os.environ, each value as YAML ---------------------


def test_the_env_source_hooks_config_overrides_still_exist() -> None:
    with revisit(REVISIT_CONFIG):
        assert list(inspect.signature(EnvSettingsSource._load_env_vars).parameters) == ["self"]
        assert list(inspect.signature(EnvSettingsSource.decode_complex_value).parameters) == [
            "self",
            "field_name",
            "field",
            "value",
        ]
        # Keys come back lower-cased: _YamlEnvSource compares them with the lower-cased prefix.
        parsed = parse_env_vars({"CATDOG__TRAINING__EPOCHS": "3"}, False, False, None)
        assert parsed == {"catdog__training__epochs": "3"}


def test_the_env_source_reads_the_given_mapping_as_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.upper().startswith("CATDOG__")]:
        monkeypatch.delenv(name)
    environ = {"CATDOG__TRAINING__EPOCHS": "3", "CATDOG__DATA__CLASSES": "[Cat, Dog]", "OTHER_VARIABLE": "x"}
    with revisit(REVISIT_CONFIG):
        # Read from os.environ (an override no longer called) this would be empty; decoded as JSON, "[Cat, Dog]" fails.
        assert _YamlEnvSource(environ)() == {"training": {"epochs": 3}, "data": {"classes": ["Cat", "Dog"]}}
    with pytest.raises(ConfigError, match="CATDOG__TRAINING_EPOCHS"):
        _YamlEnvSource({"CATDOG__TRAINING_EPOCHS": "3"})()  # one underscore: an unknown section, refused from env_vars


# --- gunicorn: BufferingWorker overrides gthread's loop and hands a thread a request held in memory -----------------

OVERRIDDEN = (
    "init_process",
    "set_accept_enabled",
    "accept",
    "enqueue_req",
    "handle_request",
    "finish_request",
    "murder_pending",
)


@pytest.mark.parametrize("name", OVERRIDDEN)
def test_the_worker_overrides_methods_gthread_still_calls(name: str) -> None:
    with revisit(REVISIT_WORKER):
        theirs = inspect.signature(getattr(ThreadWorker, name))
        ours = inspect.signature(getattr(BufferingWorker, name))
        assert list(ours.parameters) == list(theirs.parameters), f"{name}{ours} overrides {name}{theirs}"


def _hello(environ, start_response):
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body) + 3))])
    return [b"hi " + body]


def test_a_thread_serves_a_request_read_from_memory_and_the_loop_sends_the_answer() -> None:
    """The path of every request: _serve hands gthread's handle() a TConn whose parser reads the canonical request."""
    ours, peer = socket.socketpair()
    cfg = Config()
    worker = BufferingWorker(1, os.getpid(), [], None, 30, cfg, Logger(cfg))
    with revisit(REVISIT_WORKER):
        assert (worker.nr_conns, worker.worker_connections) == (0, cfg.worker_connections)
        # enqueue_req hands plain HTTP/1.1 connections to the loop only when this says no.
        assert negotiation.prior_knowledge_allowed(cfg, ("127.0.0.1", 5000)) is False
    # What BufferingWorker.init_process sets up, without reading the config or starting the loop.
    worker.wsgi, worker.clients, worker.buffered = _hello, {}, 0
    worker.max_head, worker.max_body, worker.write_timeout = 8192, 1 << 20, 5.0
    worker.tpool, worker.poller = worker.get_thread_pool(), selectors.DefaultSelector()
    worker.method_queue.init()
    try:
        with revisit(REVISIT_WORKER):
            conn = TConn(cfg, ours, ("127.0.0.1", 5000), ("127.0.0.1", 8000))
            worker.nr_conns += 1
            client = worker.clients[id(conn)] = _Client(conn)
            complete = RequestReader(8192, 1 << 20).feed(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
            assert isinstance(complete, Complete)
            worker._serve(client, complete)
            # The thread's done-callback reaches the loop through gunicorn's method queue.
            assert select.select([worker.method_queue.fileno()], [], [], 10)[0], "the thread never finished"
            worker.method_queue.run_callbacks(None)
            peer.settimeout(5)
            answer = peer.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\nhi abc"), answer
            # Kept alive: the loop waits for the next request (gthread's handle() drained the body it had read).
            assert client.state is _State.READING
            worker._close(client)
            assert worker.nr_conns == 0
    finally:
        worker.tpool.shutdown()
        worker.poller.close()
        worker.method_queue.close()
        worker.tmp.close()
        peer.close()
