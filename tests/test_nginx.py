"""deploy/nginx-catdog.conf in front of the real gunicorn: slow senders and clients that never read.

nginx runs with the shipped site file (only its two addresses changed) and a
minimal main config of its own in a temporary folder. In CI (``CI`` set) it
must run; elsewhere it is skipped without Debian's nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests

from benchmarks.hostile import Attack, attack_payloads, health_probes, slow_client_run
from catdog.config import PROJECT_ROOT
from catdog.web.server import free_port
from helpers import make_photo

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PROBE_LIMIT_S = 2.0
SITE = PROJECT_ROOT / "deploy" / "nginx-catdog.conf"

if not Path(NGINX).exists() and not os.environ.get("CI"):
    pytest.skip(f"{NGINX} is missing (apt-get install nginx); CI installs it", allow_module_level=True)


def nginx_config(folder: Path, listen_port: int, upstream_port: int) -> Path:
    """The shipped site file behind a main config whose every path lies in ``folder``."""
    site = SITE.read_text(encoding="utf-8")
    for shipped, here in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("listen 80 default_server;", f"listen 127.0.0.1:{listen_port};"),
    ):
        assert shipped in site, f"{SITE} no longer holds {shipped!r}"
        site = site.replace(shipped, here)
    (folder / "site.conf").write_text(site, encoding="utf-8")
    temp_paths = "".join(f"    {kind}_temp_path {folder}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi"))
    temp_paths += "".join(f"    {kind}_temp_path {folder}/{kind};\n" for kind in ("uwsgi", "scgi"))
    # As root, nginx's workers would run as nobody, who cannot reach pytest's private temporary folders.
    user = "user root;\n" if os.geteuid() == 0 else ""
    main = user + (
        f"worker_processes 1;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log;\n"
        "events { worker_connections 1024; }\n"
        f"http {{\n    access_log off;\n{temp_paths}    include {folder}/site.conf;\n}}\n"
    )
    path = folder / "nginx.conf"
    path.write_text(main, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def proxied(live_server, tmp_path_factory) -> str:
    """The URL of nginx in front of a gunicorn of 2 workers x 4 threads."""
    # No recycling: thousands of cheap requests would replace both workers at once, leaving none for a while.
    server = live_server(workers=2, threads=4, env={"GUNICORN_MAX_REQUESTS": "0"})
    folder = tmp_path_factory.mktemp("nginx")
    port = free_port()
    config = nginx_config(folder, port, server.port)
    command = [NGINX, "-e", str(folder / "error.log"), "-p", str(folder), "-c", str(config), "-g", "daemon off;"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, (folder / "error.log").read_text()
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, "nginx did not answer"
        time.sleep(0.2)
    yield url
    process.terminate()
    process.wait(30)


def test_the_app_answers_through_nginx(proxied):
    photo = make_photo()
    answer = requests.post(f"{proxied}/predict", files={"file": ("a.jpg", photo, "image/jpeg")}, timeout=60)
    assert answer.status_code == 200 and answer.json()["label"] in ("Cat", "Dog")
    too_large = requests.post(
        f"{proxied}/predict", data=bytes(14 * 1024 * 1024 - 4096), headers={"Content-Type": "image/jpeg"}, timeout=60
    )
    assert too_large.status_code == 413 and too_large.json()["error"]["code"] == "payload_too_large"


def test_slow_clients_through_nginx_do_not_freeze_the_server(proxied):
    result = slow_client_run(proxied, 64, 12.0)
    print(result)
    assert result["held_at_start"] == 64 and result["refused"] == 0, result
    assert result["probe_failures"] == 0 and result["probe_max_s"] < PROBE_LIMIT_S, result


def test_clients_that_never_read_through_nginx_hold_nothing(proxied):
    payload, receive_buffer = attack_payloads(make_photo())["400 pipelined /openapi.json, never read"]
    with Attack(proxied, payload, 20, receive_buffer):
        probes = health_probes(proxied, 8.0)
    print(probes)
    assert probes["probe_failures"] == 0 and probes["probe_max_s"] < PROBE_LIMIT_S, probes
