"""What the benchmarks share: a private Certwright stack on free ports, and per-process CPU meters.

Each benchmark gets its own database (dropped and created), its own Redis, its own Pebble and
challtestsrv, and the real web and worker processes, exactly as `make run` starts them.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.fernet import Fernet  # noqa: E402

from devstack.commands import beat_command, web_command, worker_command  # noqa: E402
from devstack.pebble import PebbleStack  # noqa: E402
from devstack.ports import free_port, free_tcp_udp_port  # noqa: E402
from devstack.processes import ManagedProcess, http_ok  # noqa: E402
from devstack.redis_server import start_redis  # noqa: E402
from devstack.tls import write_localhost_tls  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(message, flush=True)


class BenchVoid(RuntimeError):
    """Something failed: the run proves nothing."""


def bare_loop(script: str, *args: str) -> dict:
    """Runs a baseline's script (`python -c`) in a process of its own; its last line of output is a
    JSON object with `elapsed` (seconds) and `bad` (answers it did not expect), which must be 0."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BenchVoid(f"the bare loop failed: {result.stderr[-2000:]}")
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    if outcome["bad"]:
        raise BenchVoid(f"the bare loop got {outcome['bad']} answers it did not expect")
    return outcome


@dataclass
class BenchStack:
    """A whole Certwright stack for one benchmark run."""

    name: str
    state_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="certwright-bench-")))
    processes: list[ManagedProcess] = field(default_factory=list)
    pebble: PebbleStack | None = None

    def __post_init__(self) -> None:
        self.ports = {
            "redis": free_port(),
            "web": free_port(),
            "pebble": free_port(),
            "pebble_management": free_port(),
            "dns": free_tcp_udp_port(),
            "challtestsrv": free_port(),
            "tls_alpn": free_port(),
        }
        self.database = f"certwright_bench_{self.name}"
        # The settings insist that ACME_CA_BUNDLE exists before anything imports them.
        write_localhost_tls(self.state_dir / "pebble" / "tls")
        self.logs = self.state_dir / "logs"
        self.env = {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-secret-key-that-is-long-enough-for-the-validator",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.database}",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "QUOTA_REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/1",
            "ACME_DIRECTORY_URL": f"https://127.0.0.1:{self.ports['pebble']}/dir",
            "ACME_CA_BUNDLE": str(self.state_dir / "pebble" / "tls" / "ca.pem"),
            "ACME_CONTACT_EMAIL": "bench@example.com",
            "DNS_RESOLVERS": f"127.0.0.1:{self.ports['dns']}",
            # Pebble validates HTTP-01 on the web's port, and so does the self check.
            "HTTP01_SELF_CHECK_PORT": str(self.ports["web"]),
            "KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "EXTRA_TRUSTED_ROOTS": str(self.state_dir / "pebble" / "roots.pem"),
            "LOG_LEVEL": "WARNING",
            # Let's Encrypt's 300 new orders per account per 3 hours would make the issuance run wait
            # by design (Pebble has no such limit); it is raised as Let's Encrypt raises it on request
            # for hosting platforms. Every other limit, and the quota's cost, stay as in production.
            "QUOTA_ACCOUNT_LIMIT": "100000",
            # The issuance benchmark puts hundreds of domains on one app; the per-app limit is a
            # product rule for customers, not what is measured.
            "APP_DOMAIN_LIMIT": "1000000",
            "PYTHONPATH": str(ROOT),
        }

    # --- services ---------------------------------------------------------------------------

    def start_pebble(self, env: dict[str, str]) -> PebbleStack:
        self.pebble = PebbleStack(
            state_dir=self.state_dir / "pebble",
            acme_port=self.ports["pebble"],
            management_port=self.ports["pebble_management"],
            dns_port=self.ports["dns"],
            challtestsrv_port=self.ports["challtestsrv"],
            http01_port=self.ports["web"],
            tls_alpn_port=self.ports["tls_alpn"],
            env=env,
        ).start()
        Path(self.env["EXTRA_TRUSTED_ROOTS"]).write_bytes(self.pebble.root_pem())
        return self.pebble

    def start_redis(self) -> ManagedProcess:
        redis = start_redis("redis", self.ports["redis"], self.logs)
        self.processes.append(redis)
        return redis

    def prepare_database(self) -> None:
        """Drops and creates this benchmark's database, migrates it, and sets Django up here."""
        import psycopg
        from psycopg import sql

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database))
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        self.migrate_and_setup()

    def migrate_and_setup(self) -> None:
        """Migrates the database this stack's environment names, and sets Django up here."""
        os.environ.update(self.env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=dict(os.environ),
            check=True,
        )
        import django

        django.setup()

    def start_web(self, workers: int = 2, access_log: bool = False) -> ManagedProcess:
        port = self.ports["web"]
        web = ManagedProcess(
            "web",
            web_command(f"127.0.0.1:{port}", workers, access_log=access_log),
            self.logs,
            env=dict(os.environ),
        ).start()
        self.processes.append(web)
        probe = f"http://127.0.0.1:{port}/.well-known/acme-challenge/readiness-probe-token"
        web.wait_until(lambda: http_ok(probe), timeout=60, what="answering")
        return web

    def start_worker(self, name: str, queues: str = "dns,acme,default") -> ManagedProcess:
        """`celery worker` as `make run` starts it (pool and concurrency from the settings)."""
        worker = ManagedProcess(
            name,
            worker_command(name, queues, log_level=os.environ.get("BENCH_WORKER_LOG_LEVEL", "WARNING")),
            self.logs,
            env=dict(os.environ),
        ).start()
        self.processes.append(worker)
        worker.wait_until(lambda: _celery_ready(name), timeout=60, what="ready")
        return worker

    def start_beat(self) -> ManagedProcess:
        """Beat with its database schedule, as `make run` starts it."""
        beat = ManagedProcess(
            "beat",
            beat_command(str(self.state_dir / "beat-schedule"), "INFO"),
            self.logs,
            env=dict(os.environ),
        ).start()
        self.processes.append(beat)
        beat.wait_until(lambda: "beat: Starting" in beat.log_since_start(), timeout=30, what="started")
        return beat

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.pebble is not None:
            self.pebble.stop()

    def close(self) -> None:
        """Drops the database, stops every process, removes the state directory."""
        drop_database(self.database)
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)


def _celery_ready(name: str) -> bool:
    from config.celery import app

    replies = app.control.ping(destination=[f"{name}@{os.uname().nodename}"], timeout=0.5)
    return bool(replies)


# --- CPU accounting -----------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces; fields after it are space-separated.
    return text[text.rindex(")") + 2 :].split()


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group `pgid`, and of its reaped children."""
    total = 0
    for pid in _pids():
        fields = _stat(pid)
        # fields[2] is the process group; utime, stime, cutime, cstime are fields[11:15].
        if fields and int(fields[2]) == pgid:
            total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


def command_cpu_seconds(command_name: str) -> float:
    """User + system CPU of every live process whose command name is `command_name`."""
    total = 0
    for pid in _pids():
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if comm == command_name:
            fields = _stat(pid)
            if fields:
                total += sum(int(value) for value in fields[11:15])
    return total / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of named process sets between `start()` and `stop()`."""

    def __init__(self, probes: dict[str, Callable[[], float]]) -> None:
        self.probes = probes
        self.before: dict[str, float] = {}
        self.spent: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self.before = {name: probe() for name, probe in self.probes.items()}
        return self

    def stop(self) -> dict[str, float]:
        self.spent = {name: probe() - self.before[name] for name, probe in self.probes.items()}
        return self.spent


def create_app(region: str, app: str, ingress_ipv4: str = "127.0.0.1"):
    """A region `<region>.example-paas.io` whose ingress is `ingress_ipv4`, a user and one app in it
    named `app`; returns the app."""
    from django.contrib.auth import get_user_model

    from domains.models import App, Region

    created = Region.objects.create(
        name=region,
        domain_suffix=f"{region}.example-paas.io",
        cname_target=f"ingress.{region}.example-paas.io",
        ingress_ipv4=[ingress_ipv4],
    )
    owner = get_user_model().objects.create(username=f"{region}-{app}")
    return App.objects.create(owner=owner, region=created, name=app)


def fake_sealed_keys(count: int) -> list[str]:
    """Fernet tokens of the size `seal()` makes of an EC P-256 PEM key (241 bytes)."""
    from cryptography.fernet import Fernet

    fernet = Fernet(Fernet.generate_key())
    return [fernet.encrypt(os.urandom(241)).decode() for _ in range(count)]


def fake_chain() -> str:
    """A leaf and an intermediate as PEM, the size of a real chain (~1.6 KB, incompressible): what a
    certificate row holds, for benchmarks that fill tables with SQL and never parse it."""
    blocks = []
    for size in (560, 540):
        body = base64.b64encode(os.urandom(size)).decode()
        lines = "\n".join(body[start : start + 64] for start in range(0, len(body), 64))
        blocks.append(f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n")
    return "".join(blocks)


def drop_database(name: str) -> None:
    """Drops a benchmark's database (after closing this process's connections to it)."""
    import psycopg
    from psycopg import sql

    if "django" in sys.modules:
        from django.db import connections

        connections.close_all()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def median(values: list[float]) -> float:
    return statistics.median(values)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False
