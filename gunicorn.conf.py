"""gunicorn settings for the catdog app: ``gunicorn -c gunicorn.conf.py app:app``.

Without an app on the command line gunicorn serves ``catdog.web.app:create_app()``,
the same app, which needs no ``app.py``: an installed catdog serves from any
working folder with ``CATDOG_CONFIG=/path/to/config.yaml gunicorn -c /path/to/gunicorn.conf.py``
(the config's folder, or its ``serving.site_dir``, holds the pages).

Everything that differs between machines comes from the environment:

* ``CATDOG_BIND`` (e.g. ``0.0.0.0:8000`` or ``unix:/run/catdog.sock``), or
  ``HOST`` (default ``127.0.0.1``) and ``PORT`` (default ``8000``);
* ``WEB_CONCURRENCY``: worker processes (default 2); each loads its own model;
* ``GUNICORN_THREADS``: threads per worker (default 4);
* ``GUNICORN_TIMEOUT``: seconds a silent worker may take before it is
  restarted (default 60; loading the model counts);
* ``GUNICORN_GRACEFUL_TIMEOUT``: seconds to finish requests on shutdown (default 20);
* ``GUNICORN_HEADER_TIMEOUT``: seconds a request's head may take to arrive (default 10);
* ``GUNICORN_BODY_TIMEOUT`` and ``GUNICORN_MIN_BODY_RATE``: a body may take
  this many seconds (default 10) plus one per this many bytes its head
  declares (default 16384); slower requests are answered 408 and closed;
* ``GUNICORN_IDLE_TIMEOUT``: seconds a request may go without a byte (default 10);
* ``GUNICORN_WRITE_TIMEOUT``: seconds a client has to read its answer before
  the connection is cut (default 10);
* ``GUNICORN_MAX_BUFFERED``: bytes one worker holds for requests being read
  and answers being sent (default 64 MiB); past it, new bodies get 503;
* ``GUNICORN_MAX_REQUESTS``: requests after which a worker is replaced
  (default 1000, with up to 10% jitter; 0 never), so memory a worker once
  needed is given back;
* ``GUNICORN_RECYCLE_SPACING``: seconds after one worker leaves to be replaced
  before another may (default 5), so one is always serving
  (:mod:`catdog.web.recycling`);
* ``GUNICORN_CONTROL_SOCKET``: path of gunicorn's control socket (for
  ``gunicornc``); off by default, as its default path is shared by every
  instance of the same user.
* ``PROMETHEUS_MULTIPROC_DIR``: where the workers keep their metrics for
  ``/metrics`` (emptied at start); by default a fresh temporary folder,
  removed on exit.

The worker class is gunicorn's ``gthread`` with one change
(:mod:`catdog.web.worker`): the worker's event loop reads each request in full
(framed by h11) before a thread serves it, and sends the answer the thread
wrote into memory, under the deadlines and budget above, so neither slow
senders nor clients that never read can hold the threads.

The app is not preloaded in the master: every worker imports it and loads
and warms up its own model before accepting requests, so no TensorFlow state
crosses a fork.
"""

import os
import shutil
import tempfile


def _int_from_env(name: str, default: int, minimum: int = 1) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SystemExit(f"gunicorn.conf.py: {name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise SystemExit(f"gunicorn.conf.py: {name} must be at least {minimum}, got {value}")
    return value


# Workers inherit the master's environment: keep TensorFlow's start-up chatter out of the log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

bind = [os.environ.get("CATDOG_BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{_int_from_env('PORT', 8000)}"]
wsgi_app = "catdog.web.app:create_app()"
worker_class = "catdog.web.worker.BufferingWorker"
workers = _int_from_env("WEB_CONCURRENCY", 2)
threads = _int_from_env("GUNICORN_THREADS", 4)
timeout = _int_from_env("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int_from_env("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = 5
max_requests = _int_from_env("GUNICORN_MAX_REQUESTS", 1000, minimum=0)
max_requests_jitter = max_requests // 10
# The worker reads these from the environment it inherits; checked here so a bad value stops the start.
for _name, _default in (
    ("GUNICORN_HEADER_TIMEOUT", 10),
    ("GUNICORN_BODY_TIMEOUT", 10),
    ("GUNICORN_IDLE_TIMEOUT", 10),
    ("GUNICORN_WRITE_TIMEOUT", 10),
    ("GUNICORN_MIN_BODY_RATE", 16384),
    ("GUNICORN_MAX_BUFFERED", 64 * 1024 * 1024),
    ("GUNICORN_RECYCLE_SPACING", 5),
):
    os.environ[_name] = str(_int_from_env(_name, _default))
preload_app = False
if os.environ.get("GUNICORN_CONTROL_SOCKET"):
    control_socket = os.environ["GUNICORN_CONTROL_SOCKET"]
else:
    control_socket_disable = True
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")


def post_worker_init(worker):
    """Log when a worker has loaded its model and starts taking requests."""
    worker.log.info("Worker ready (pid: %s)", worker.pid)


# --- Prometheus metrics across workers (prometheus-client's multiprocess mode) ---------------
# Each worker writes its values to files in PROMETHEUS_MULTIPROC_DIR and /metrics adds them up.
# The variable must be set before a worker imports prometheus_client, so the master sets it
# before it forks the first worker; the folder must start empty, or the last run's counts
# would be added to this one's.
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def on_starting(server):
    """Give the workers an empty metrics folder (the operator's, emptied, or a temporary one) and a turn-taking file."""
    folder = os.environ.get(METRICS_DIR_ENV)
    if folder:
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(folder):
            if name.endswith(".db"):
                os.remove(os.path.join(folder, name))
    else:
        folder = tempfile.mkdtemp(prefix="catdog-metrics-")
        os.environ[METRICS_DIR_ENV] = folder
        server.catdog_owned_metrics_dir = folder  # kept on the arbiter: it outlives a config reload
    server.log.info("Workers' metrics in %s", folder)
    # The workers' turn-taking file (catdog/web/recycling.py), one per server.
    fd, gate = tempfile.mkstemp(prefix="catdog-recycle-")
    os.close(fd)
    os.environ["CATDOG_RECYCLE_GATE"] = server.catdog_recycle_gate = gate


def child_exit(server, worker):
    """Fold the counters of a worker that exited into the folder's archives and drop its files and gauges."""
    from catdog.web.metrics_files import archive_dead_worker

    archive_dead_worker(worker.pid, os.environ[METRICS_DIR_ENV])


def on_exit(server):
    """Remove the temporary metrics folder and turn-taking file this server made."""
    folder = getattr(server, "catdog_owned_metrics_dir", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
    gate = getattr(server, "catdog_recycle_gate", None)
    if gate and os.path.exists(gate):
        os.remove(gate)
