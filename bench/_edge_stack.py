"""The edge benchmark's processes: Certwright (web and the feed service) on its own PostgreSQL,
HAProxies, edge agents, and the TLS client that measures them.

The stack is bench/_harness.py's BenchStack (the same settings, Redis and web command), with the
database on a private PostgreSQL server (bench/_edge_postgres.py) instead of the shared one, and
the feed service beside the web; the rest of this module drives HAProxy and the agents."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _edge_postgres import PrivatePostgres
from _harness import ROOT, BenchStack

from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok, tcp_open

DATABASE = "certwright_bench_edge"
# A request line in gunicorn's access log ("GET /path HTTP/1.1").
_REQUEST = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE|HEAD|OPTIONS) (\S+) HTTP/[0-9.]+"')


def feed_command(bind: str, workers: int = 1) -> list[str]:
    """The feed service's command line (devstack.commands.feed_command), with its access log on
    stdout so the benchmark can count its requests."""
    from devstack import commands

    if not hasattr(commands, "feed_command"):
        raise SystemExit("VOID: devstack/commands.py has no feed_command (the feed service is not there yet)")
    argv = commands.feed_command(bind, workers)
    return argv if "--access-logfile" in argv else [*argv, "--access-logfile", "-"]


@dataclass
class EdgeStack(BenchStack):
    """BenchStack on a private PostgreSQL server, with the feed service."""

    postgres: PrivatePostgres = field(default_factory=PrivatePostgres)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.ports["feed"] = free_port()
        self.database = DATABASE
        self.env["DATABASE_URL"] = self.postgres.url(DATABASE)
        self.env["EXTRA_TRUSTED_ROOTS"] = str(self.state_dir / "roots.pem")
        # A feed service that holds its database connections open across the outage must find them
        # broken and reconnect: Django checks a connection before reusing it.
        self.env["DATABASE_CONN_MAX_AGE"] = "60"
        self.web: ManagedProcess | None = None
        self.feed: ManagedProcess | None = None

    def prepare_database(self) -> None:
        """initdb, start, create and migrate the database, and set Django up in this process."""
        self.postgres.init()
        self.postgres.start()
        self.postgres.create_database(DATABASE)
        os.environ.update(self.env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=dict(os.environ),
            check=True,
        )
        import django

        django.setup()

    @property
    def feed_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['feed']}"

    def start_certwright(self, web_workers: int = 2, feed_workers: int = 1) -> None:
        """The web (gunicorn, access log on) and the feed service; (re)starts them after an outage."""
        if self.web is None:
            self.web = self.start_web(workers=web_workers, access_log=True)
        else:
            self.web.start()
            probe = f"http://127.0.0.1:{self.ports['web']}/.well-known/acme-challenge/readiness-probe-token"
            self.web.wait_until(lambda: http_ok(probe), timeout=60, what="answering")
        if self.feed is None:
            self.feed = ManagedProcess(
                "feed",
                feed_command(f"127.0.0.1:{self.ports['feed']}", feed_workers),
                self.logs,
                env=dict(os.environ),
            )
            self.processes.append(self.feed)
        self.feed.start()
        # Unauthenticated: a 401 says it is up.
        self.feed.wait_until(
            lambda: http_ok(f"{self.feed_url}/routers/v1/changes"), timeout=60, what="answering"
        )

    def stop_certwright(self) -> None:
        """The outage: the web processes and the feed service stop, then PostgreSQL."""
        for process in (self.web, self.feed):
            if process is not None:
                process.stop()
        from django.db import connections

        connections.close_all()
        self.postgres.stop()

    def requests_served(self) -> dict[str, list[str]]:
        """The request paths in the web's and the feed service's access logs so far (this run)."""
        time.sleep(0.3)  # gunicorn writes its access log line after the answer
        found = {}
        for process in (self.web, self.feed):
            if process is not None:
                text = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
                found[process.name] = _REQUEST.findall(text)
        return found

    def close(self) -> None:
        """Stops every process, the private PostgreSQL, and removes the state directory."""
        if "django" in sys.modules:
            try:
                from django.db import connections

                connections.close_all()
            except Exception:  # noqa: S110 (Django may not be set up yet)
                pass
        self.stop()
        self.postgres.remove()
        shutil.rmtree(self.state_dir, ignore_errors=True)


# --- HAProxy ---------------------------------------------------------------------------------------


@dataclass
class HAProxy:
    name: str
    home: Path
    https_port: int
    process: ManagedProcess

    @property
    def socket(self) -> Path:
        return self.home / "admin.sock"

    @property
    def crt_list(self) -> Path:
        return self.home / "crt-list.txt"

    @property
    def cert_dir(self) -> Path:
        return self.home / "certs"


def start_haproxy(name: str, home: Path, web_port: int, log_dir: Path, entries: str = "") -> HAProxy:
    """HAProxy (Debian's) in the foreground on free ports, from the shipped configuration, with
    `entries` as its crt-list (`<pem path> <name>` lines, as the agent's driver writes them)."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    home.mkdir(parents=True, exist_ok=True)
    (home / "certs").mkdir(exist_ok=True)
    https_port = free_port()
    proxy = HAProxy(name, home, https_port, None)  # type: ignore[arg-type]
    proxy.crt_list.write_text(entries)
    # The configuration Certwright ships (edge/haproxy_config.py), the same for every HAProxy here:
    # only the crt-list's content differs.
    from edge.haproxy_config import render_config

    config = home / "haproxy.cfg"
    config.write_text(
        render_config(
            socket_path=str(proxy.socket),
            crt_list=str(proxy.crt_list),
            web_servers=[f"127.0.0.1:{web_port}"],
            https_bind=f"127.0.0.1:{https_port}",
            http_bind=f"127.0.0.1:{free_port()}",
        )
    )
    check = subprocess.run([binary, "-c", "-q", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        raise SystemExit(f"VOID: {name}'s configuration is refused: {check.stderr.strip()[-800:]}")
    proxy.process = ManagedProcess(name, [binary, "-db", "-f", str(config)], log_dir).start()
    proxy.process.wait_until(lambda: tcp_open("127.0.0.1", https_port), timeout=120, what="listening")
    return proxy


# --- the agent -------------------------------------------------------------------------------------


def agent_binary() -> str:
    binary = Path(sys.executable).parent / "certwright-edge"
    if not binary.exists():
        found = shutil.which("certwright-edge")
        if not found:
            raise SystemExit("VOID: certwright-edge is not installed (bash devstack/bootstrap.sh)")
        return found
    return str(binary)


def start_agent(
    name: str, url: str, token: str, home: Path, log_dir: Path, driver_args: list[str]
) -> ManagedProcess:
    """`certwright-edge run` with its token in a 0600 file and its store under `home`; no Django
    setting in its environment (it needs none)."""
    home.mkdir(parents=True, exist_ok=True)
    token_file = home / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    argv = [
        agent_binary(),
        "run",
        "--url",
        url,
        "--token-file",
        str(token_file),
        "--store",
        str(home / "store"),
        *driver_args,
    ]
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}
    return ManagedProcess(name, argv, log_dir, env=environment).start()


def peak_rss_mb(pid: int) -> float:
    """VmHWM (the resident set's high-water mark) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --- the TLS client --------------------------------------------------------------------------------


def client_context(root_pem: bytes) -> ssl.SSLContext:
    """TLS 1.3 only, verifying against the bench CA, no session tickets: every connection is a
    full handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.load_verify_locations(cadata=root_pem.decode())
    context.options |= ssl.OP_NO_TICKET
    return context


def handshake(
    port: int, server_name: str, context: ssl.SSLContext, timeout: float = 5.0
) -> tuple[float, str]:
    """A new TCP connection and a verified TLS 1.3 handshake for `server_name`: (seconds, SHA-256
    of the leaf the server presented). Raises OSError / ssl.SSLError when it fails."""
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            elapsed = time.perf_counter() - started
            der = tls.getpeercert(binary_form=True)
    return elapsed, hashlib.sha256(der).hexdigest()


def fingerprint_or_none(port: int, server_name: str, context: ssl.SSLContext) -> str | None:
    try:
        return handshake(port, server_name, context, timeout=2.0)[1]
    except (OSError, ssl.SSLError):
        return None
