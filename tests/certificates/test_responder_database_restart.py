"""The HTTP-01 responder rides out a PostgreSQL restart: a CA validating at that moment gets its
answer once the database is back (within RESPONDER_DATABASE_WAIT_SECONDS), not a 500 that fails
the validation, and a 503 when it stays away longer. Real gunicorn, its database behind a relay
that refuses connections as a restarting server does."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from certificates.models import Challenge, Order, OrderState
from certificates.sealing import seal
from devstack.commands import web_command
from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok
from tests.conftest import RUN_DIR, celery_subprocess_env
from tests.factories import AcmeAccountFactory, DomainFactory
from tests.tcp_relay import database_relay

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TOKEN = "dbRestartToken_6pSRb2LAv9IZf17Dt3juxGJ-PCt92"


@pytest.fixture
def web_behind_relay():
    relay, url = database_relay()
    port = free_port()
    web = ManagedProcess(
        "web-behind-relay",
        web_command(f"127.0.0.1:{port}", workers=1),
        RUN_DIR / "logs",
        env={**celery_subprocess_env(), "DATABASE_URL": url},
    ).start()
    web.wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/admin/login/"), timeout=30, what="answering")
    yield relay, f"http://127.0.0.1:{port}/.well-known/acme-challenge/{TOKEN}"
    web.stop()
    relay.close()


def _challenge() -> None:
    order = Order.objects.create(
        domain=DomainFactory(),
        account=AcmeAccountFactory(),
        names=["www.example.com"],
        state=OrderState.VALIDATING,
        private_key=seal(b"key"),
    )
    Challenge.objects.create(
        order=order,
        identifier="www.example.com",
        authorization_url="https://ca.example/authz/1",
        token=TOKEN,
        key_authorization=f"{TOKEN}.thumbprint",
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_a_validation_during_a_database_restart_gets_the_key_authorization(web_behind_relay):
    relay, url = web_behind_relay
    _challenge()
    assert _get(url) == (200, f"{TOKEN}.thumbprint")
    relay.refusing = True
    relay.cut()
    back = threading.Timer(1.0, lambda: setattr(relay, "refusing", False))
    back.start()
    try:
        assert _get(url) == (200, f"{TOKEN}.thumbprint")
    finally:
        back.cancel()


def test_a_database_that_stays_away_gets_a_503_not_a_500(web_behind_relay):
    relay, url = web_behind_relay
    _challenge()
    relay.refusing = True
    relay.cut()
    status, body = _get(url)
    assert (status, body) == (503, "the database is unavailable\n")
