"""A private redis-server on its own port, keeping nothing on disk (like the broker in production)."""

from __future__ import annotations

import shutil
from pathlib import Path

from devstack.processes import ManagedProcess, tcp_open


def start_redis(name: str, port: int, log_dir: Path, host: str = "127.0.0.1") -> ManagedProcess:
    """redis-server listening on `host`:`port` only (a bridge address for the simulated hosts)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server not found: install Debian's package with `apt-get install -y redis-server`"
        )
    process = ManagedProcess(
        name,
        [
            binary,
            "--port",
            str(port),
            "--bind",
            host,
            # Protected mode refuses clients from other addresses when there is no password.
            "--protected-mode",
            "no" if host != "127.0.0.1" else "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(log_dir),
        ],
        log_dir,
    ).start()
    process.wait_until(lambda: tcp_open(host, port), what="listening")
    return process
