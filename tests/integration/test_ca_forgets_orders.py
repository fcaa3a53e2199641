"""A CA that forgot an order, or the account that placed it (Pebble restarted; at Let's Encrypt an
expired order or a deactivated account), ends that order and starts over at the next sweep, with no
failure counted: before, a forgotten order's 404 was taken for a network error and retried for
about 8 minutes, and a forgotten account failed the domain into the backoff."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from certificates.acme_client import _new_account_key_pem, get_account
from certificates.models import AcmeAccount, Order, OrderState
from certificates.sealing import seal
from domains.models import Domain, DomainStatus, WaitingOn
from tests.factories import CertificateFactory, DomainFactory, OrderFactory
from workers import order_run

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


def _order_in_validation(account: AcmeAccount, order_url: str) -> tuple[Domain, Order]:
    domain = DomainFactory(status=DomainStatus.CREATING)
    order = OrderFactory(
        domain=domain,
        account=account,
        state=OrderState.VALIDATING,
        order_url=order_url,
        lease_token=uuid.uuid4(),
        lease_until=timezone.now() + datetime.timedelta(seconds=60),
    )
    return domain, order


def _unreachable_account() -> AcmeAccount:
    """An account at a CA that does not answer at all (nothing listens there)."""
    return AcmeAccount.objects.create(
        directory_url="https://127.0.0.1:9/dir",
        key=seal(_new_account_key_pem()),
        account_url="https://127.0.0.1:9/my-account/1",
    )


def _assert_started_over(domain: Domain, order: Order, before: datetime.datetime) -> None:
    order.refresh_from_db()
    domain.refresh_from_db()
    assert order.state == OrderState.INVALID
    assert domain.status == DomainStatus.CREATING
    assert domain.consecutive_failures == 0
    # Due again at once: the next sweep places a new order.
    assert domain.next_attempt_at is not None and domain.next_attempt_at <= timezone.now()
    assert domain.next_attempt_at >= before


def test_an_order_the_ca_no_longer_knows_starts_over_at_the_next_sweep_without_a_failure(pebble_stack):
    account = get_account()
    base = settings.ACME_DIRECTORY_URL.removesuffix("/dir")
    domain, order = _order_in_validation(account, f"{base}/my-order/an-order-the-ca-forgot")
    before = timezone.now()

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    assert outcome == "started over: the CA no longer knows this order (HTTP 404)"
    _assert_started_over(domain, order, before)
    assert "the CA no longer knows this order" in domain.last_error


def test_an_account_the_ca_no_longer_knows_is_registered_again_and_the_order_starts_over(pebble_stack):
    base = settings.ACME_DIRECTORY_URL.removesuffix("/dir")
    account = AcmeAccount.objects.create(
        directory_url=settings.ACME_DIRECTORY_URL,
        key=seal(_new_account_key_pem()),
        account_url=f"{base}/my-account/an-account-the-ca-forgot",
    )
    domain, order = _order_in_validation(account, f"{base}/my-order/its-order")
    before = timezone.now()

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    assert outcome.startswith("started over: the CA no longer knows the platform's ACME account")
    _assert_started_over(domain, order, before)
    account.refresh_from_db()
    assert account.account_url == ""  # registered again, with a new key, at its next use
    assert get_account().account_url.startswith(f"{base}/my-account/")


def test_an_order_that_never_reaches_the_ca_fails_without_pushing_its_domain_deeper_into_backoff(
    pebble_stack, settings
):
    settings.ACME_STEP_RETRIES = 1
    # After DNS failures of its own.
    account = _unreachable_account()
    domain, order = _order_in_validation(account, "https://127.0.0.1:9/my-order/1")
    Domain.objects.filter(pk=domain.pk).update(consecutive_failures=5)
    outcomes = []
    for _ in range(2):
        token = Order.objects.get(pk=order.pk).lease_token
        outcomes.append(order_run.run_step(order.pk, str(token)))
    before = timezone.now()

    assert outcomes[0] == "retry validating: could not reach the CA: ConnectionError"
    assert outcomes[1] == "failed: could not reach the CA: ConnectionError"
    domain.refresh_from_db()
    assert domain.status == DomainStatus.FAILING
    # Not a sixth failure (32 minutes): the CA's outage is retried a minute later.
    assert domain.consecutive_failures == 5
    assert before < domain.next_attempt_at <= before + datetime.timedelta(seconds=61)


def test_a_directory_that_answers_404_is_retried_as_the_ca_unreachable_not_started_over(pebble_stack):
    base = settings.ACME_DIRECTORY_URL.removesuffix("/dir")
    # A wrong ACME_DIRECTORY_URL: a new order would meet the same 404.
    account = AcmeAccount.objects.create(
        directory_url=f"{base}/not-a-directory",
        key=seal(_new_account_key_pem()),
        account_url=f"{base}/my-account/1",
    )
    _, order = _order_in_validation(account, f"{base}/my-order/1")

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    assert outcome == "retry validating: could not reach the CA: ClientError"


def test_a_creating_domain_says_why_its_order_waits_while_the_ca_is_unreachable(pebble_stack, settings):
    settings.ACME_STEP_RETRIES = 3
    account = _unreachable_account()
    domain, order = _order_in_validation(account, "https://127.0.0.1:9/my-order/1")
    before = timezone.now()

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    assert outcome == "retry validating: could not reach the CA: ConnectionError"
    domain.refresh_from_db()
    assert domain.status == DomainStatus.CREATING
    assert domain.waiting_on == WaitingOn.CA
    said = "could not reach the CA: ConnectionError; the step is tried again at "
    assert domain.last_error.startswith(said)
    assert domain.last_error.endswith("(attempt 1 of 3)")
    assert f"{before:%Y-%m-%d}" in domain.last_error


def test_a_renewals_domain_keeps_its_status_and_says_nothing_while_its_order_is_retried(pebble_stack):
    account = _unreachable_account()
    domain, order = _order_in_validation(account, "https://127.0.0.1:9/my-order/1")
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.IN_USE)
    Order.objects.filter(pk=order.pk).update(renews=CertificateFactory(domain=domain))

    outcome = order_run.run_step(order.pk, str(order.lease_token))

    assert outcome == "retry validating: could not reach the CA: ConnectionError"
    domain.refresh_from_db()
    assert domain.status == DomainStatus.IN_USE and domain.last_error == "" and domain.waiting_on == ""
