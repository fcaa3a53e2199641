"""The several-hosts cluster of bench/hosts.py: services on a bridge, Certwright's processes in
network namespaces (devstack/netns.py), one per simulated host.

The machine's PostgreSQL and Redis listen on loopback only, which the namespaces cannot reach, so
the cluster starts its own on the bridge's address: a private PostgreSQL (bench/_edge_postgres.py),
a broker Redis and a quota Redis (two servers, so that each one's memory is measured apart), and
Pebble with pebble-challtestsrv, which Pebble and the workers both resolve through. Every web host
binds the same port on its own address, the port Pebble's HTTP-01 validation connects to; each
domain's A record names one of the two web hosts (the names are split between them), and the
region's ingress lists both.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _edge_postgres import PrivatePostgres
from _harness import ROOT
from cryptography.fernet import Fernet

from devstack.commands import beat_command, web_command, worker_command
from devstack.netns import Host, Network
from devstack.pebble import PebbleStack
from devstack.ports import free_port, free_tcp_udp_port
from devstack.processes import ManagedProcess, http_ok
from devstack.redis_server import start_redis

DATABASE = "certwright_hosts"
WEB_PORT = 8000
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
WEB_HOSTS = ("web1", "web2")
WORKER_HOSTS = ("worker1", "worker2", "worker3")
BEAT_HOSTS = ("beat1", "beat2")


@dataclass
class Cluster:
    """Seven hosts (two web, three worker, two beat) and the services they share."""

    prefix: str
    subnet: str
    settings: dict[str, str] = field(default_factory=dict)
    state_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="certwright-hosts-")))
    processes: dict[str, list[ManagedProcess]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.network = Network(self.prefix, self.subnet)
        self.logs = self.state_dir / "logs"
        self.postgres: PrivatePostgres | None = None
        self.pebble: PebbleStack | None = None
        self.redis: dict[str, ManagedProcess] = {}
        self.redis_ports: dict[str, int] = {}

    # --- services ---------------------------------------------------------------------------

    def start_services(self) -> None:
        """The bridge, PostgreSQL, the two Redis servers and Pebble on the bridge's address, the
        database migrated; the environment every process gets is then in `self.env`."""
        self.network.create()
        address = self.network.services_address
        self.postgres = PrivatePostgres(host=address, trusted_network=self.subnet).init()
        self.postgres.start()
        self.postgres.create_database(DATABASE)
        for role in ("broker", "quota"):
            self.redis_ports[role] = free_port(address)
            self.redis[role] = start_redis(f"redis-{role}", self.redis_ports[role], self.logs, host=address)
        self.pebble = PebbleStack(
            state_dir=self.state_dir / "pebble",
            acme_port=free_port(address),
            management_port=free_port(address),
            dns_port=free_tcp_udp_port(address),
            challtestsrv_port=free_port(address),
            http01_port=WEB_PORT,
            tls_alpn_port=free_port(address),
            env=PEBBLE_ENV,
            host=address,
        ).start()
        roots = self.state_dir / "roots.pem"
        roots.write_bytes(self.pebble.root_pem())
        web_addresses = [str(self.network.network.network_address + 2 + i) for i in range(len(WEB_HOSTS))]
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "SECRET_KEY": "hosts-bench-secret-key-that-is-long-enough-for-the-validator",
            "ALLOWED_HOSTS": ",".join(web_addresses),
            "DATABASE_URL": self.postgres.url(DATABASE),
            "CELERY_BROKER_URL": f"redis://{address}:{self.redis_ports['broker']}/0",
            "QUOTA_REDIS_URL": f"redis://{address}:{self.redis_ports['quota']}/0",
            "ACME_DIRECTORY_URL": self.pebble.directory_url,
            "ACME_CA_BUNDLE": str(self.pebble.listener_ca_path),
            "ACME_CONTACT_EMAIL": "hosts@example.com",
            "DNS_RESOLVERS": f"{address}:{self.pebble.dns_port}",
            "HTTP01_SELF_CHECK_PORT": str(WEB_PORT),
            "KEY_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "EXTRA_TRUSTED_ROOTS": str(roots),
            "LOG_LEVEL": "WARNING",
            # As in bench/_harness.py: Let's Encrypt raises the per-account order limit for hosting
            # platforms on request, and the per-app limit is a rule for customers, not the subject.
            "QUOTA_ACCOUNT_LIMIT": "100000",
            "APP_DOMAIN_LIMIT": "1000000",
            # One client creates every domain through the API: its write throttle is not measured.
            "API_WRITE_RATE": "1000000/min",
            "PYTHONPATH": str(ROOT),
            **self.settings,
        }
        os.environ.update(self.env)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        import django

        django.setup()

    # --- hosts ------------------------------------------------------------------------------

    def _start(self, host: Host, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, host.command(argv), self.logs, env=self.env).start()
        self.processes.setdefault(host.name, []).append(process)
        return process

    def start_hosts(self) -> None:
        """Two web hosts, three worker hosts and two beat hosts, each in its namespace; returns once
        every web host answers and every worker answers a ping."""
        web = []
        for name in WEB_HOSTS:
            host = self.network.add_host(name)
            web.append(
                (host, self._start(host, name, web_command(f"{host.address}:{WEB_PORT}", access_log=False)))
            )
        workers = []
        for name in WORKER_HOSTS:
            host = self.network.add_host(name)
            workers.append((name, self._start(host, name, worker_command(name, log_level="WARNING"))))
        for name in BEAT_HOSTS:
            host = self.network.add_host(name)
            self._start(host, name, beat_command(str(self.state_dir / f"{name}-schedule"), log_level="INFO"))
        for host, process in web:
            probe = f"http://{host.address}:{WEB_PORT}/.well-known/acme-challenge/readiness-probe-token"
            process.wait_until(lambda probe=probe: http_ok(probe), timeout=90, what="answering")
        for name, process in workers:
            process.wait_until(lambda name=name: _celery_ready(name), timeout=90, what="ready")

    def host(self, name: str) -> Host:
        return self.network.hosts[name]

    def web_addresses(self) -> list[str]:
        return [self.host(name).address for name in WEB_HOSTS]

    def worker_processes(self) -> int:
        """Worker processes (pool children) alive now, over every worker host."""
        from django.conf import settings

        alive = sum(1 for name in WORKER_HOSTS if any(p.alive() for p in self.processes.get(name, [])))
        return alive * settings.WORKER_CONCURRENCY

    def cut_from_data(self, name: str) -> None:
        """The host loses PostgreSQL and both Redis servers (packets dropped) until `heal`."""
        ports = [self.postgres.port, *self.redis_ports.values()]
        self.host(name).cut(self.network.services_address, ports)

    # --- domains ----------------------------------------------------------------------------

    def create_app(self):
        """A region whose ingress is both web hosts, an app in it, and an API token of its owner."""
        from django.contrib.auth import get_user_model

        from api.tokens import create_token
        from domains.models import App, Region

        region = Region.objects.create(
            name="hosts",
            domain_suffix="hosts.example-paas.io",
            cname_target="ingress.hosts.example-paas.io",
            ingress_ipv4=self.web_addresses(),
        )
        owner = get_user_model().objects.create(username="hosts-owner")
        app = App.objects.create(owner=owner, region=region, name="hosts-app")
        _, token = create_token(owner, "hosts bench")
        return app, token

    def point_names(self, app_id: int, names: list[str]) -> None:
        """Each name's A record at one web host (alternately) and its ownership TXT record."""
        from domains.ownership import challenge_name, ownership_token

        dns = self.pebble.challtestsrv
        addresses = self.web_addresses()

        def point(item: tuple[int, str]) -> None:
            index, name = item
            dns.add_a(name, [addresses[index % len(addresses)]])
            dns.set_txt(challenge_name(name), ownership_token(app_id, name))

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(point, enumerate(names)))

    def add_domains(self, app_name: str, token: str, names: list[str]) -> list[str]:
        """POSTs every name to the API, alternating between the web hosts; returns the failures."""
        addresses = self.web_addresses()

        def add(item: tuple[int, str]) -> str | None:
            index, name = item
            url = f"http://{addresses[index % len(addresses)]}:{WEB_PORT}/api/v1/apps/{app_name}/domains"
            request = urllib.request.Request(
                url,
                data=json.dumps({"name": name}).encode(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return None if response.status == 201 else f"{name}: {response.status}"
            except Exception as exc:
                return f"{name}: {exc}"

        with ThreadPoolExecutor(8) as pool:
            return [failure for failure in pool.map(add, enumerate(names)) if failure]

    # --- the end ----------------------------------------------------------------------------

    def pebble_log(self) -> str:
        return (self.state_dir / "pebble" / "logs" / "pebble.log").read_text(errors="replace")

    def redis_memory(self, role: str) -> dict[str, int]:
        import redis

        info = redis.Redis(host=self.network.services_address, port=self.redis_ports[role]).info("memory")
        return {key: int(info[key]) for key in ("used_memory", "used_memory_peak")}

    def close(self, keep_logs: bool = False) -> None:
        """Kills every host, removes the namespaces, bridge and rule, stops the services and removes
        the state directory (or keeps it, for a failed run's logs)."""
        if "django" in sys.modules:
            from django.db import connections

            connections.close_all()
        self.network.destroy()
        for process in self.redis.values():
            process.stop()
        if self.pebble is not None:
            self.pebble.stop()
        if self.postgres is not None:
            self.postgres.remove()
        if not keep_logs:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def _celery_ready(name: str) -> bool:
    from config.celery import app

    return bool(app.control.ping(destination=[f"{name}@{os.uname().nodename}"], timeout=0.5))
