"""Fixtures that start the real services: Redis (broker and quota), Pebble, challtestsrv, Celery workers.

PostgreSQL is the machine's (`.ci/run` and `make test` start it if it is down); pytest-django creates
the test database on it. Everything else runs on free ports chosen by config/settings_test.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
from django.conf import settings

from devstack.pebble import PebbleStack
from devstack.processes import ManagedProcess
from devstack.redis_server import start_redis

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
def broker_redis(redis_servers) -> redis.Redis:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    yield client
    client.close()


@pytest.fixture(scope="session")
def pebble_stack() -> PebbleStack:
    """Pebble and challtestsrv; Pebble validates HTTP-01 on the port of the test web server."""
    stack = PebbleStack(
        state_dir=RUN_DIR / "pebble",
        acme_port=_port("PEBBLE"),
        management_port=_port("PEBBLE_MANAGEMENT"),
        dns_port=_port("DNS"),
        challtestsrv_port=_port("CHALLTESTSRV"),
        http01_port=_port("HTTP01"),
        tls_alpn_port=_port("TLSALPN"),
        env={"PEBBLE_WFE_NONCEREJECT": "0"},
    ).start()
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


def start_celery_worker(name: str, queues: str = "dns,acme,default", concurrency: int = 2) -> ManagedProcess:
    """A real `celery worker` subprocess on the test database and the test broker."""
    env = celery_subprocess_env()
    worker = ManagedProcess(
        name,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            queues,
            "-n",
            f"{name}@%h",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ],
        RUN_DIR / "logs",
        env=env,
    ).start()
    worker.wait_until(lambda: "ready." in worker.log_since_start(), timeout=60, what="ready")
    return worker


@pytest.fixture(scope="session")
def celery_worker(django_db_setup, django_db_blocker, redis_servers):
    """One worker for the whole session, consuming every queue."""
    worker = start_celery_worker("worker-session")
    yield worker
    worker.stop()
