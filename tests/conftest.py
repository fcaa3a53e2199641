"""Fixtures that start the real services: Redis (broker and quota), Pebble, challtestsrv, Celery workers.

PostgreSQL is the machine's (`.ci/run` and `make test` start it if it is down); pytest-django creates
the test database on it. Everything else runs on free ports chosen by config/settings_test.py.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

from devstack.commands import feed_command, web_command, worker_command
from devstack.mail_sink import MailSink
from devstack.pebble import PebbleStack
from devstack.processes import ManagedProcess, http_ok
from devstack.redis_server import start_redis
from tests.leak_watch import LeakWatch, RecordHandler

# The issuance stack behind the test ACME proxy (ARI, profiles, pauses): the `proxied_issuance` fixture.
pytest_plugins = [
    "tests.proxied_stack",
    "tests.directory_stub",
    "tests.issuers.two_cas",
    "tests.flush_retry",
]

RUN_DIR = Path(os.environ["CERTWRIGHT_TEST_RUN_DIR"])
ROOT = Path(__file__).resolve().parent.parent


def _port(name: str) -> int:
    return int(os.environ[f"CERTWRIGHT_TEST_{name}_PORT"])


@pytest.fixture(scope="session", autouse=True)
def redis_servers():
    """The broker's Redis and the quota Redis: two servers, so each can fail on its own in tests."""
    logs = RUN_DIR / "logs"
    broker = start_redis("redis-broker", _port("BROKER"), logs)
    quota = start_redis("redis-quota", _port("QUOTA"), logs)
    yield {"broker": broker, "quota": quota}
    quota.stop()
    broker.stop()


@pytest.fixture
def quota_redis(redis_servers) -> redis.Redis:
    """The quota Redis, emptied: each test starts with fresh buckets (as after a Redis restart)."""
    client = redis.Redis.from_url(settings.QUOTA_REDIS_URL)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def app(quota_redis):
    """An app in a region whose ingress is this machine, where Pebble validates HTTP-01; the quota
    buckets start empty."""
    from tests.factories import AppFactory, RegionFactory

    region = RegionFactory(
        name="local",
        domain_suffix="local.example-paas.io",
        cname_target="ingress.local.example-paas.io",
        ingress_ipv4=["127.0.0.1"],
        ingress_ipv6=[],
    )
    return AppFactory(name="my-app", region=region)


@pytest.fixture
def broker_redis(redis_servers) -> redis.Redis:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


def make_pebble_stack(env: dict[str, str] | None = None) -> PebbleStack:
    """Pebble and challtestsrv on this run's ports; Pebble's root becomes EXTRA_TRUSTED_ROOTS."""
    stack = PebbleStack(
        state_dir=RUN_DIR / "pebble",
        acme_port=_port("PEBBLE"),
        management_port=_port("PEBBLE_MANAGEMENT"),
        dns_port=_port("DNS"),
        challtestsrv_port=_port("CHALLTESTSRV"),
        # Pebble validates HTTP-01 on the test web server's port.
        http01_port=_port("HTTP01"),
        tls_alpn_port=_port("TLSALPN"),
        env={"PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0", **(env or {})},
    ).start()
    Path(settings.EXTRA_TRUSTED_ROOTS).write_bytes(stack.root_pem())
    return stack


@pytest.fixture(scope="session")
def pebble_stack() -> PebbleStack:
    stack = make_pebble_stack()
    yield stack
    stack.stop()


@pytest.fixture
def challtestsrv(pebble_stack):
    return pebble_stack.challtestsrv


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return (
        f"postgres://{user}{password}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


def celery_subprocess_env() -> dict[str, str]:
    """The environment of a Celery subprocess: this run's services and the test database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        # pytest-django switched this process to the test database; the subprocess must use it too.
        "DATABASE_URL": _test_database_url(),
        "PYTHONPATH": str(ROOT),
    }


def start_celery_worker(
    name: str, queues: str = "dns,acme,default", concurrency: int = 2, extra_env: dict[str, str] | None = None
) -> ManagedProcess:
    """A real `celery worker` subprocess on the test database and the test broker."""
    env = {**celery_subprocess_env(), **(extra_env or {})}
    worker = ManagedProcess(
        name,
        worker_command(name, queues, concurrency=concurrency),
        RUN_DIR / "logs",
        env=env,
    ).start()
    worker.wait_until(lambda: "ready." in worker.log_since_start(), timeout=60, what="ready")
    return worker


class SessionWorker:
    """The session's worker, consuming every queue; tests that need the queues to themselves pause it."""

    def __init__(self) -> None:
        self.process: ManagedProcess | None = None

    def ensure_running(self) -> ManagedProcess:
        if self.process is None or not self.process.alive():
            self.process = start_celery_worker("worker-session")
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@pytest.fixture(scope="session")
def session_worker(django_db_setup, redis_servers):
    worker = SessionWorker()
    yield worker
    worker.stop()


@pytest.fixture
def celery_worker(session_worker) -> ManagedProcess:
    """A running worker consuming every queue (the session's)."""
    return session_worker.ensure_running()


@pytest.fixture
def without_session_worker(session_worker, broker_redis):
    """No worker runs unless the test starts its own; the broker starts empty."""
    session_worker.stop()
    broker_redis.flushdb()
    yield
    broker_redis.flushdb()


@pytest.fixture(scope="session")
def web_server(django_db_setup, redis_servers) -> ManagedProcess:
    """The web app under gunicorn on the HTTP-01 port, on the test database: Pebble validates here."""
    port = _port("HTTP01")
    server = ManagedProcess(
        "web",
        web_command(f"127.0.0.1:{port}"),
        RUN_DIR / "logs",
        env=celery_subprocess_env(),
    ).start()
    server.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/admin/login/"), timeout=30, what="answering")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def feed_server(django_db_setup, redis_servers) -> ManagedProcess:
    """The feed service (the routers' long-poll and snapshot under gunicorn's ASGI worker) on the test
    database; its URL is `feed_server.url`."""
    from devstack.ports import free_port

    port = free_port()
    server = ManagedProcess(
        "feed",
        feed_command(f"127.0.0.1:{port}"),
        RUN_DIR / "logs",
        env=celery_subprocess_env(),
    ).start()
    server.url = f"http://127.0.0.1:{port}"
    server.wait_until(lambda: http_ok(f"{server.url}/routers/v1/changes"), timeout=30, what="answering")
    yield server
    server.stop()


@pytest.fixture
def issuance_stack(pebble_stack, web_server, celery_worker):
    """Everything a certificate needs: Pebble, challtestsrv, the web responder and a worker."""
    return pebble_stack


@pytest.fixture
def pebble_variant(pebble_stack):
    """Restarts the session's Pebble with other settings for one test: call it with the env."""

    def restart(env: dict[str, str]) -> PebbleStack:
        pebble_stack.stop()
        pebble_stack.env = {"PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0", **env}
        pebble_stack.start()
        Path(settings.EXTRA_TRUSTED_ROOTS).write_bytes(pebble_stack.root_pem())
        return pebble_stack

    yield restart
    restart({})


@pytest.fixture(scope="session")
def pki():
    """A test PKI (tests/pki.py): a root, an intermediate and leaves made to order."""
    from tests.pki import Pki

    return Pki()


@pytest.fixture
def trusted(pki, settings, tmp_path):
    """The test PKI with its root trusted by the upload checks (EXTRA_TRUSTED_ROOTS), as Pebble's
    is in the real settings."""
    settings.EXTRA_TRUSTED_ROOTS = pki.write_root(tmp_path / "root.pem")
    return pki


@pytest.fixture
def trusted_pki():
    """A test PKI whose root the session's web server trusts for uploads (it re-reads
    EXTRA_TRUSTED_ROOTS when the file changes); the file is restored afterwards."""
    from tests.pki import Pki, pem

    pki = Pki("Certwright Web Test")
    roots = Path(settings.EXTRA_TRUSTED_ROOTS)
    before = roots.read_bytes()
    roots.write_bytes(before + pem(pki.root))
    yield pki
    roots.write_bytes(before)


LEAK_WATCH = LeakWatch()


@pytest.fixture(autouse=True)
def fresh_issuer_rows():
    """The issuers' rows follow the settings once per process (certificates/issuers.py); a test's
    database is rolled back after it, so each test writes them afresh when it needs them."""
    from certificates.issuers import forget_sync

    forget_sync()
    yield
    forget_sync()


@pytest.fixture(scope="session", autouse=True)
def leak_watch():
    """Every response of Django's test clients and every log record of this process go through the
    leak check; the subprocesses' log files are read at the end (pytest_sessionfinish)."""
    from django.test import Client

    original = Client.request

    def request(self, **environ):
        response = original(self, **environ)
        LEAK_WATCH.response(
            f"{environ.get('REQUEST_METHOD', 'GET')} {environ.get('PATH_INFO', '')}", response
        )
        return response

    Client.request = request
    handler = RecordHandler(LEAK_WATCH)
    logging.getLogger().addHandler(handler)
    yield LEAK_WATCH
    logging.getLogger().removeHandler(handler)
    Client.request = original


def pytest_sessionfinish(session, exitstatus) -> None:
    LEAK_WATCH.files(RUN_DIR)
    _search_mails(SMTP_SINK)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(
            f"leak check: {LEAK_WATCH.responses} responses ({LEAK_WATCH.handed_to_routers} certificates "
            f"handed to routers not searched), {LEAK_WATCH.records} log records, {LEAK_WATCH.mails} mails "
            f"and the log files of {RUN_DIR} searched; {len(LEAK_WATCH.finds)} leak(s)"
        )
        for find in LEAK_WATCH.finds[:20]:
            reporter.write_line(f"LEAK: {find}", red=True)
    if LEAK_WATCH.finds:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def receiver():
    """A webhook receiver on 127.0.0.3, which the test settings allow (tests/webhook_receiver.py)."""
    from tests.webhook_receiver import start_receiver

    started = start_receiver("127.0.0.3")
    yield started
    started.stop()


# The suite's SMTP server (devstack/mail_sink.py), on the port the test settings send mail to: the
# test process's and the workers'. Every mail it gets goes through the leak check at the end.
SMTP_SINK = MailSink("127.0.0.1", _port("SMTP"))


@pytest.fixture(scope="session")
def smtp_server():
    SMTP_SINK.start()
    yield SMTP_SINK
    SMTP_SINK.stop()


def _search_mails(sink: MailSink) -> None:
    """The leak check over the mails the server holds, which it then forgets."""
    for received in sink.mails:
        LEAK_WATCH.mail(received)
    sink.clear()


@pytest.fixture
def smtp(smtp_server, settings):
    """The suite's SMTP server, emptied, with this process's mail going to it over SMTP (pytest-django
    swaps in the in-memory backend otherwise)."""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    _search_mails(smtp_server)
    smtp_server.refuse = False
    yield smtp_server
    smtp_server.refuse = False
    _search_mails(smtp_server)
