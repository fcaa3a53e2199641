"""The HTTP-01 self check: the worker fetches the challenge from the name's addresses (through the
test DNS, challtestsrv) before telling the CA to validate, and holds its answer while the platform
does not serve it, so a web outage costs no failed validation."""

from __future__ import annotations

import datetime
import http.server
import threading
import uuid
from collections.abc import Iterator

import pytest
from acme import messages
from django.utils import timezone

from certificates.acme_client import client_for, get_account
from certificates.keys import generate_private_key_pem
from certificates.models import Challenge, Order, OrderState
from certificates.sealing import seal
from devstack.ports import free_port
from domains.models import DomainStatus
from tests.factories import DomainFactory, OrderFactory
from tests.integration.polling import unique_name
from workers import order_run
from workers.http01_self_check import challenge_not_served

pytestmark = [pytest.mark.integration, pytest.mark.django_db]

TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = f"{TOKEN}.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"


class _Responder(http.server.BaseHTTPRequestHandler):
    answer: tuple[int, dict[str, str], bytes] = (200, {}, KEY_AUTHORIZATION.encode())
    seen: list[tuple[str, str]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("Host", "")))
        status, headers, body = self.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def responder(settings) -> Iterator[type[_Responder]]:
    """A stand-in for the platform's web on the self check's port, answering what the test sets."""
    handler = type("Responder", (_Responder,), {"seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    settings.HTTP01_SELF_CHECK_PORT = server.server_address[1]
    settings.HTTP01_SELF_CHECK_SECONDS = 300  # as shipped (the suite's workers use 3 s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()


def test_a_challenge_served_with_its_key_authorization_passes_and_is_fetched_with_the_name_as_host(
    challtestsrv, responder
):
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])

    assert challenge_not_served(name, TOKEN, KEY_AUTHORIZATION) is None
    assert responder.seen == [(f"/.well-known/acme-challenge/{TOKEN}", name)]


def test_a_wrong_answer_says_which_address_answered_what(challtestsrv, responder):
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])
    responder.answer = (404, {}, b"no such challenge")

    assert challenge_not_served(name, TOKEN, KEY_AUTHORIZATION) == (
        f"127.0.0.1 answered /.well-known/acme-challenge/{TOKEN} with HTTP 404, not the key authorization"
    )
    responder.answer = (200, {}, b"someone else's key authorization")
    assert "with HTTP 200, not the key authorization" in challenge_not_served(name, TOKEN, KEY_AUTHORIZATION)


def test_every_address_must_serve_it(challtestsrv, responder):
    name = unique_name()
    # 127.0.0.1 serves it; nothing listens on 127.0.0.2 at that port.
    challtestsrv.add_a(name, ["127.0.0.1", "127.0.0.2"])

    wrong = challenge_not_served(name, TOKEN, KEY_AUTHORIZATION)

    assert wrong is not None and wrong.startswith("127.0.0.2 did not answer /.well-known/acme-challenge/")


def test_a_redirect_passes_since_the_ca_follows_it_and_the_check_does_not(challtestsrv, responder):
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])
    responder.answer = (301, {"Location": f"https://{name}/.well-known/acme-challenge/{TOKEN}"}, b"")

    assert challenge_not_served(name, TOKEN, KEY_AUTHORIZATION) is None


def _pending_order(name: str, created: datetime.datetime | None = None) -> Order:
    order = OrderFactory(
        domain=DomainFactory(status=DomainStatus.CREATING, name=name),
        account=get_account(),
        private_key=seal(generate_private_key_pem("ec256")),
        lease_token=uuid.uuid4(),
        lease_until=timezone.now() + datetime.timedelta(seconds=60),
    )
    if created is not None:
        Order.objects.filter(pk=order.pk).update(created=created)
    return order


def _challenge_status(order: Order) -> str:
    challenge = Challenge.objects.get(order=order)
    authorization = messages.Authorization.from_json(
        client_for(order.account)._post_as_get(challenge.authorization_url).json()
    )
    return next(c for c in authorization.challenges if c.uri == challenge.challenge_url).status.name


def test_an_order_whose_challenge_is_not_served_waits_unanswered_then_answers_once_it_is(
    challtestsrv, responder, settings
):
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])
    responder.answer = (503, {}, b"the web is down")
    order = _pending_order(name)

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    order.refresh_from_db()
    assert outcome == "pending -> authorizing; authorizing -> authorizing", outcome
    assert order.state == OrderState.AUTHORIZING
    # Checked again within seconds, and the CA was not told: nothing to fail.
    lease = datetime.timedelta(seconds=settings.ACME_ORDER_LEASE_SECONDS)
    assert order.lease_until <= timezone.now() + lease + datetime.timedelta(seconds=2)
    assert _challenge_status(order) == "pending"

    challenge = Challenge.objects.get(order=order)
    responder.answer = (200, {}, challenge.key_authorization.encode())
    outcome = order_run.run_step(order.pk, str(order.lease_token))

    order.refresh_from_db()
    assert order.state == OrderState.VALIDATING, outcome
    assert _challenge_status(order) != "pending"


def test_past_the_self_check_time_the_challenge_is_answered_anyway_and_the_ca_decides(
    challtestsrv, responder, settings
):
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])
    responder.answer = (503, {}, b"the web is down")
    too_old = timezone.now() - datetime.timedelta(seconds=settings.HTTP01_SELF_CHECK_SECONDS + 1)
    order = _pending_order(name, created=too_old)

    order_run.run_step(order.pk, str(order.lease_token))

    order.refresh_from_db()
    assert order.state == OrderState.VALIDATING
    assert responder.seen == []
    assert _challenge_status(order) != "pending"


def test_a_self_check_time_of_zero_answers_at_once_without_fetching(challtestsrv, responder, settings):
    settings.HTTP01_SELF_CHECK_SECONDS = 0
    name = unique_name()
    challtestsrv.add_a(name, ["127.0.0.1"])
    responder.answer = (503, {}, b"the web is down")
    order = _pending_order(name)

    order_run.run_step(order.pk, str(order.lease_token))

    order.refresh_from_db()
    assert order.state == OrderState.VALIDATING
    assert responder.seen == []
