"""A real HAProxy for tests and benchmarks, from the configuration Certwright ships, and a verifying TLS
client: what a handshake for a name is shown.

    process, socket_path, crt_list, cert_dir = start_haproxy(tmp_dir, https_port, http_port, web_port)
    handshake(https_port, "www.example.com", cafile)  # the leaf's sha256 hex, or raises ssl.SSLError

HAProxy runs in the foreground (`-db`), its log (stdout) under the run's logs/ where the suite's leak
check reads it; `process.stop()` ends it. `restart_haproxy(process)` stops it and starts the same
configuration again (a restart loads the crt-list and PEMs from disk).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import tempfile
import uuid
from pathlib import Path

from devstack.processes import ManagedProcess, tcp_open
from edge.haproxy_config import render_config

HAPROXY = "/usr/sbin/haproxy"
# AF_UNIX paths are limited to 108 bytes; pytest's tmp paths can be longer.
MAX_SOCKET_PATH = 100


def _run_dir_logs() -> Path:
    run_dir = os.environ.get("CERTWRIGHT_TEST_RUN_DIR")
    return Path(run_dir) / "logs" if run_dir else Path(tempfile.gettempdir()) / "certwright-haproxy-logs"


class Haproxy(ManagedProcess):
    """`haproxy -db -f <config>`; ready when its socket answers and its HTTPS port accepts."""

    def __init__(self, config: Path, socket_path: str, https_port: int, name: str | None = None) -> None:
        name = name or f"haproxy-{uuid.uuid4().hex[:8]}"
        super().__init__(name, [HAPROXY, "-db", "-f", str(config)], _run_dir_logs())
        self.config = config
        self.socket_path = socket_path
        self.https_port = https_port

    def start(self, timeout: float = 60.0) -> Haproxy:
        super().start()
        self.wait_until(self._ready, timeout=timeout, what="listening")
        return self

    def _ready(self) -> bool:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(self.socket_path)
        return tcp_open("127.0.0.1", self.https_port)


def start_haproxy(
    tmp_dir: str | os.PathLike,
    https_port: int,
    http_port: int,
    web_port: int,
    *,
    app_servers: tuple[str, ...] = (),
    name: str | None = None,
) -> tuple[Haproxy, str, str, str]:
    """HAProxy from the shipped config on 127.0.0.1 (HTTPS, HTTP; HTTP-01 to the web on `web_port`),
    with an empty crt-list unless `tmp_dir` already has one. Returns (process, socket, crt-list, cert dir)."""
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    socket_path = str(tmp_dir / "admin.sock")
    if len(socket_path) > MAX_SOCKET_PATH:
        socket_path = os.path.join(tempfile.mkdtemp(prefix="cwhap-"), "admin.sock")
    crt_list = tmp_dir / "crt-list"
    cert_dir = tmp_dir / "certs"
    cert_dir.mkdir(exist_ok=True)
    crt_list.touch()
    config = tmp_dir / "haproxy.cfg"
    config.write_text(
        render_config(
            socket_path=socket_path,
            crt_list=str(crt_list),
            web_servers=[f"127.0.0.1:{web_port}"],
            app_servers=app_servers,
            https_bind=f"127.0.0.1:{https_port}",
            http_bind=f"127.0.0.1:{http_port}",
        )
    )
    process = Haproxy(config, socket_path, https_port, name).start()
    return process, socket_path, str(crt_list), str(cert_dir)


def restart_haproxy(process: Haproxy, timeout: float = 60.0) -> Haproxy:
    """Stops `process` and starts its configuration again: a new process that loads from disk."""
    process.stop()
    return Haproxy(process.config, process.socket_path, process.https_port, process.name).start(timeout)


def handshake(port: int, server_name: str, cafile: str | os.PathLike) -> str:
    """A TLS handshake with 127.0.0.1:`port` asking for `server_name`, verified against `cafile` (chain and
    name); the leaf's sha256 hex. Raises ssl.SSLError (or OSError) when it fails."""
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def presented(port: int, server_name: str, cafile: str | os.PathLike) -> str | None:
    """The fingerprint `handshake` returns, or None when the handshake fails (a refused name)."""
    try:
        return handshake(port, server_name, cafile)
    except (ssl.SSLError, OSError):
        return None
