"""The fault matrix's stack: every service private to the run, so each can be restarted, flushed,
silenced or killed without touching anything else on the machine.

A PostgreSQL cluster of its own (bench/_edge_postgres.py), a broker Redis and a separate quota
Redis, Pebble and challtestsrv, the test ACME proxy in front of Pebble (its own process, driven
through /_proxy/), a UDP relay standing for the platform's DNS resolvers (bench/_faults_dns.py),
gunicorn web processes (the HTTP-01 responder), a Celery worker and beat, all as `make run` starts
them.
"""

from __future__ import annotations

import datetime
import os
import signal
import time
import urllib.request
from pathlib import Path

from _edge_postgres import PrivatePostgres
from _faults_dns import DnsRelay
from _harness import ROOT, BenchStack, say

from devstack.commands import beat_command
from devstack.pebble import trust_root
from devstack.ports import free_port, free_tcp_udp_port
from devstack.processes import ManagedProcess
from devstack.redis_server import start_redis

DATABASE = "certwright_faults"
PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
# Pebble's certificates last 90 days; a root is kept in the trusted file that long after the next.
CERTIFICATE_VALIDITY = datetime.timedelta(days=90)


class FaultStack:
    """The stack, and one method per fault to inflict and to lift."""

    def __init__(self) -> None:
        self.bench = BenchStack("faults")
        self.postgres = PrivatePostgres()
        self.quota_port = free_port()
        self.proxy_port = free_port()
        self.dns_port = free_tcp_udp_port()
        self.bench.env.update(
            {
                "DATABASE_URL": self.postgres.url(DATABASE),
                "QUOTA_REDIS_URL": f"redis://127.0.0.1:{self.quota_port}/0",
                "ACME_DIRECTORY_URL": f"https://127.0.0.1:{self.proxy_port}/dir",
                "DNS_RESOLVERS": f"127.0.0.1:{self.dns_port}",
            }
        )
        self.dns = DnsRelay(self.dns_port, ("127.0.0.1", self.bench.ports["dns"]))
        self.broker: ManagedProcess | None = None
        self.quota: ManagedProcess | None = None
        self.proxy: ManagedProcess | None = None
        self.control = None
        self.web: ManagedProcess | None = None
        self.worker: ManagedProcess | None = None
        self.beats: list[ManagedProcess] = []
        self.beats_started = 0

    @property
    def logs(self) -> Path:
        return self.bench.logs

    @property
    def pebble_log(self) -> Path:
        return self.bench.pebble.processes[1].log_path

    def start(self) -> None:
        self.postgres.init()
        self.postgres.start()
        self.postgres.create_database(DATABASE)
        self.broker = self.bench.start_redis()
        self.quota = start_redis("quota-redis", self.quota_port, self.logs)
        self.bench.processes.append(self.quota)
        self.bench.migrate_and_setup()
        self.bench.start_pebble(PEBBLE_ENV)
        self._start_proxy()
        self.dns.start()
        self.web = self.bench.start_web(workers=2)
        self.worker = self.bench.start_worker("worker")
        # Two beats, as on two hosts: a leader and a standby (workers/beat_lease.py).
        self.start_beat()
        self.start_beat()

    def _start_proxy(self) -> None:
        from devstack.acme_proxy import ProxyControl, proxy_command

        tls = self.bench.state_dir / "pebble" / "tls"
        self.proxy = ManagedProcess(
            "acme-proxy",
            proxy_command(f"127.0.0.1:{self.bench.ports['pebble']}", tls, self.proxy_port),
            self.logs,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        ).start()
        self.bench.processes.append(self.proxy)
        directory = f"https://127.0.0.1:{self.proxy_port}/dir"
        context = self.bench.pebble.ssl_context()
        self.proxy.wait_until(lambda: _answers(directory, context), timeout=30, what="serving")
        self.control = ProxyControl(directory, tls / "ca.pem")

    def start_beat(self) -> ManagedProcess:
        self.beats_started += 1
        beat = ManagedProcess(
            f"beat-{self.beats_started}",
            beat_command(str(self.bench.state_dir / f"beat-schedule-{self.beats_started}"), "INFO"),
            self.logs,
            env=dict(os.environ),
        ).start()
        self.bench.processes.append(beat)
        beat.wait_until(lambda: "beat: Starting" in beat.log_since_start(), timeout=30, what="started")
        self.beats.append(beat)
        return beat

    def stop(self) -> None:
        """Stops everything, each part even if stopping another raised (or was interrupted)."""
        import shutil

        steps = [self.dns.stop]
        if self.control is not None:
            steps.append(self.control.close)
        steps += [process.stop for process in reversed(self.bench.processes)]
        if self.bench.pebble is not None:
            steps.append(self.bench.pebble.stop)
        steps += [self.postgres.remove, lambda: shutil.rmtree(self.bench.state_dir, ignore_errors=True)]
        for step in steps:
            try:
                step()
            # A Ctrl-C here must not leave the rest running.
            except BaseException as exc:
                say(f"    while stopping: {exc!r}")
        self.bench.processes.clear()

    # --- the faults: each returns when the fault has ended (the service is back) -------------

    def restart_postgres(self) -> None:
        """A fast shutdown (every session cut, as a crash or failover looks to clients), then start."""
        self.postgres.stop()
        self.postgres.start()

    def restart_broker(self) -> None:
        """SIGKILL and a new redis-server on the same port, keeping nothing on disk: queues are lost."""
        self.broker.signal_group(signal.SIGKILL)
        self.broker.popen.wait(10)
        self.broker.start()
        self.broker.wait_until(lambda: _redis_ping(self.bench.ports["redis"]), what="answering")

    def flush_quota(self) -> None:
        import redis

        redis.Redis(port=self.quota_port).flushall()

    def restart_pebble(self) -> int:
        """A new Pebble process: its accounts, orders and root forgotten. Its new root is added to
        EXTRA_TRUSTED_ROOTS as an operator would (the file replaced, nothing restarted); returns the
        number of roots the file holds."""
        pebble = self.bench.pebble
        process = pebble.processes[1]
        process.stop()
        process.start()
        context = pebble.ssl_context()
        process.wait_until(lambda: _answers(pebble.directory_url, context), what="serving its directory")
        return trust_root(
            Path(self.bench.env["EXTRA_TRUSTED_ROOTS"]), pebble.root_pem(), CERTIFICATE_VALIDITY
        )

    def ca_outage(self, mode: str, seconds: int) -> None:
        self.control.post("outage", mode=mode, seconds=seconds)
        time.sleep(seconds)
        self.control.post("outage", mode="none")

    def resolvers_silent(self, seconds: int) -> None:
        self.dns.silent = True
        time.sleep(seconds)
        self.dns.silent = False

    def web_down(self, seconds: int) -> None:
        self.web.signal_group(signal.SIGKILL)
        self.web.popen.wait(10)
        time.sleep(seconds)
        self.web.start()
        port = self.bench.ports["web"]
        from devstack.processes import http_ok

        probe = f"http://127.0.0.1:{port}/.well-known/acme-challenge/readiness-probe-token"
        self.web.wait_until(lambda: http_ok(probe), timeout=60, what="answering")

    def kill_beat_leader(self) -> int:
        """SIGKILL the beat holding the leader lease (the standby takes over when the lease runs
        out), then start another beat as the new standby, as a host's supervisor would; returns
        the killed leader's term."""
        from workers.models import BeatLease

        deadline = time.monotonic() + 60
        lease = None
        while time.monotonic() < deadline and lease is None:
            lease = BeatLease.objects.filter(pk=BeatLease.SINGLETON_ID).first()
            time.sleep(0.0 if lease else 0.5)
        if lease is None:
            raise RuntimeError("no beat took the leader lease within 60 s")
        leader = next(beat for beat in self.beats if beat.pid == lease.pid)
        leader.signal_group(signal.SIGKILL)
        leader.popen.wait(10)
        self.beats.remove(leader)
        self.bench.processes.remove(leader)
        self.start_beat()
        return lease.term


def _answers(url: str, context) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except OSError:
        return False


def _redis_ping(port: int) -> bool:
    import redis

    return bool(redis.Redis(port=port, socket_timeout=1).ping())
