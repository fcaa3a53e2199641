"""`make run` twice, as a developer does: the second run's demo ends with a `curl` line that works,
and the first run's demo events reach the demo webhook receiver (signatures verified) and the
mail sink, whose page shows the mail.

Each run starts the whole dev stack (`python -m devstack`: Pebble, challtestsrv, web, the feed
service, HAProxy with the edge agent, worker, beat, Flower) on free ports with its state in a
temporary directory, on its own database and Redis. Pebble makes a new root at every start, while
the demo's certificate from the first run is kept and served: a verifying TLS client, with the roots
file the demo's `curl` line names, must accept what HAProxy serves after the second start.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography import x509
from django.conf import settings
from psycopg import sql

from devstack.ports import free_port, free_tcp_udp_port
from devstack.redis_server import start_redis
from tests.integration.tls import fingerprint, shown

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent.parent
RUN_DIR = Path(os.environ["CERTWRIGHT_TEST_RUN_DIR"])
CURL_LINE = re.compile(
    r"demo: see it served over TLS: curl --cacert (\S+) --resolve www\.example\.com:(\d+):"
)
# Migrating a fresh database, starting seven processes and issuing the demo's certificate.
RUN_TIMEOUT = 300


def _connect():
    db = settings.DATABASES["default"]
    return psycopg.connect(
        host=db.get("HOST") or "127.0.0.1",
        port=db.get("PORT") or 5432,
        user=db.get("USER") or "postgres",
        password=db.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture
def dev_database():
    """A database of its own for the dev stack (it creates it); dropped afterwards."""
    db = settings.DATABASES["default"]
    name = f"certwright_devstack_{uuid.uuid4().hex[:8]}"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    yield f"postgres://{db.get('USER') or 'postgres'}{password}@{host}:{port}/{name}"
    with _connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class DevStackRun:
    """One `python -m devstack`, its output in a file; stopped as Ctrl-C would."""

    def __init__(self, env: dict[str, str], output: Path) -> None:
        self.output = output
        with output.open("ab") as log:
            self.offset = log.tell()
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "devstack"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def said(self) -> str:
        with self.output.open("rb") as handle:
            handle.seek(self.offset)
            return handle.read().decode(errors="replace")

    def curl_line(self) -> tuple[Path, int]:
        """Waits for the demo's `curl` line; returns its roots file and the router's port."""
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            found = CURL_LINE.search(self.said())
            if found:
                return ROOT / found.group(1), int(found.group(2))
            if self.popen.poll() is not None or "did not reach In use" in self.said():
                break
            time.sleep(0.5)
        raise AssertionError(f"the demo printed no curl line; make run said:\n{self.said()[-4000:]}")

    def wait_said(self, pattern: str, timeout: float) -> re.Match:
        """Waits for a line matching `pattern` in what the run printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.said(), re.M)
            if found:
                return found
            time.sleep(0.5)
        raise AssertionError(f"make run printed nothing like {pattern!r}:\n{self.said()[-4000:]}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)


def test_a_second_make_run_serves_the_kept_demo_certificate_verifiably_with_the_printed_roots(
    dev_database,
):
    state = RUN_DIR / f"devstack-{uuid.uuid4().hex[:8]}"
    state.mkdir()
    redis = start_redis("redis-devstack", free_port(), state / "logs")
    ports = {
        "CERTWRIGHT_WEB_PORT": free_port(),
        "CERTWRIGHT_FLOWER_PORT": free_port(),
        "CERTWRIGHT_ROUTER_PORT": free_port(),
        "CERTWRIGHT_ROUTER_HTTP_PORT": free_port(),
        "CERTWRIGHT_FEED_PORT": free_port(),
        "CERTWRIGHT_PEBBLE_PORT": free_port(),
        "CERTWRIGHT_PEBBLE_MANAGEMENT_PORT": free_port(),
        "CERTWRIGHT_DNS_PORT": free_tcp_udp_port(),
        "CERTWRIGHT_CHALLTESTSRV_PORT": free_port(),
        "CERTWRIGHT_TLS_ALPN_PORT": free_port(),
        "CERTWRIGHT_SMTP_PORT": free_port(),
        "CERTWRIGHT_MAIL_PAGE_PORT": free_port(),
        "CERTWRIGHT_WEBHOOK_DEMO_PORT": free_port(),
    }
    redis_url = f"redis://127.0.0.1:{redis.argv[redis.argv.index('--port') + 1]}"
    # Nothing of the test run's own settings (its Pebble, resolvers, secrets) may reach the stack.
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    env |= {name: str(port) for name, port in ports.items()}
    env |= {
        "CERTWRIGHT_STATE_DIR": str(state),
        "CERTWRIGHT_ENV_FILE": str(state / "env"),
        "DATABASE_URL": dev_database,
        "CELERY_BROKER_URL": f"{redis_url}/0",
        "QUOTA_REDIS_URL": f"{redis_url}/1",
        "WORKER_CONCURRENCY": "2",
    }
    output = state / "make-run.log"
    served = []
    try:
        for number in range(2):
            run = DevStackRun(env, output)
            try:
                roots, router_port = run.curl_line()
                certificate, answer = shown(router_port, "www.example.com", cadata=roots.read_text())
                served.append((certificate, roots, answer))
                if number == 0:
                    # The demo's events reach the demo receiver, signed, and its owner's mailbox.
                    run.wait_said(r"webhook: domain\.in_use www\.example\.com \(signature verified\)", 30)
                    run.wait_said(
                        r"webhook: certificate\.issued www\.example\.com \(signature verified\)", 30
                    )
                    mailed = run.wait_said(
                        r"mail: to admin@example\.com: \[Certwright\] .*\(http://\S+\)", 90
                    )
                    page = urllib.request.urlopen(mailed.group(0).rsplit("(", 1)[1].rstrip(")"), timeout=10)
                    assert "www.example.com" in page.read().decode()
                    assert "REFUSED" not in run.said()
            finally:
                run.stop()
    finally:
        redis.stop()
    (first, _, _), (second, roots, answer) = served
    assert b"Hello from www.example.com, served by HAProxy" in answer
    # The first run's certificate is the one kept and served: its Pebble's root is still trusted.
    assert fingerprint(second) == fingerprint(first)
    assert len(x509.load_pem_x509_certificates(roots.read_bytes())) == 2
