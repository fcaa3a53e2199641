"""One row that makes a sweep raise never stalls the others: the check's chunk and the renewal
chunk set that row aside (error recorded, next attempt pushed out on the backoff) and process the
rest; an order whose step raises an unexpected error is retried with the step backoff, then fails,
instead of looping on lease expiries."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from certificates.models import Certificate, Order, OrderState
from certificates.sealing import seal
from domains.backoff import retry_delay
from domains.models import Domain, DomainStatus
from tests.factories import AcmeAccountFactory, CertificateFactory, DomainFactory
from tests.integration.polling import unique_name
from workers import domain_checks, order_run, preflight, renewals

POISON = "the row that makes the check raise"


@pytest.fixture
def poisoned(monkeypatch):
    """Makes the DNS diagnosis raise for the names put in the returned set, as a bug that one
    domain's data triggers would."""
    names: set[str] = set()
    diagnose = preflight.diagnose

    def raising(lookup, target):
        if lookup.name in names:
            raise ValueError(POISON)
        return diagnose(lookup, target)

    monkeypatch.setattr(preflight, "diagnose", raising)
    return names


def _elsewhere(challtestsrv, name: str) -> None:
    challtestsrv.add_a(name, ["203.0.113.9"])


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_domain_that_makes_the_check_raise_is_set_aside_and_the_rest_of_its_chunk_is_checked(
    challtestsrv, app, poisoned
):
    names = [unique_name() for _ in range(5)]
    for name in names:
        _elsewhere(challtestsrv, name)
    now = timezone.now()
    domains = [
        DomainFactory(app=app, name=name, status=DomainStatus.PENDING_DNS, next_attempt_at=now)
        for name in names
    ]
    poison = domains[3]
    poisoned.add(poison.name)
    ids, token = domain_checks.claim_due(now)
    assert sorted(ids) == sorted(d.pk for d in domains)

    counts = domain_checks.check_claimed(ids, str(token), now)

    assert counts["set_aside"] == 1 and counts["checked"] == 4
    for domain in domains:
        domain.refresh_from_db()
        assert domain.claim_token is None
        assert domain.consecutive_failures == 1
        assert domain.next_attempt_at == now + retry_delay(1)
        if domain.pk == poison.pk:
            assert domain.last_error.startswith("Certwright could not check this domain: internal error")
            assert POISON in domain.last_error
            assert domain.last_checked_at is None
        else:
            assert "has A record 203.0.113.9" in domain.last_error
            assert domain.last_checked_at == now


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_certificate_that_makes_the_renewal_raise_is_set_aside_and_the_others_are_renewed_or_told_why(
    challtestsrv, app, poisoned
):
    now = timezone.now()
    certificates = []
    for _ in range(3):
        name = unique_name()
        _elsewhere(challtestsrv, name)
        domain = DomainFactory(app=app, name=name, status=DomainStatus.IN_USE)
        certificates.append(CertificateFactory(domain=domain, renew_at=now - datetime.timedelta(minutes=1)))
    poison = certificates[0]
    poisoned.add(poison.domain.name)
    ids, token = renewals.claim_due_renewals(now)
    assert sorted(ids) == sorted(c.pk for c in certificates)

    counts = renewals.renew_claimed(ids, str(token), now)

    assert counts["set_aside"] == 1 and counts["failed"] == 2
    for certificate in certificates:
        certificate = Certificate.objects.get(pk=certificate.pk)
        domain = Domain.objects.get(pk=certificate.domain_id)
        assert certificate.renewal_claim is None
        assert certificate.renewal_failures == 1
        assert certificate.renew_at == now + retry_delay(1)
        assert domain.status == DomainStatus.IN_USE
        assert domain.last_error == certificate.renewal_error
        assert certificate.renewal_error.startswith("Renewal failed: ")
        if certificate.pk == poison.pk:
            assert POISON in certificate.renewal_error
        else:
            assert "has A record 203.0.113.9" in certificate.renewal_error


@pytest.mark.django_db
def test_an_order_whose_step_raises_is_retried_with_backoff_then_fails_instead_of_looping(
    monkeypatch, settings
):
    settings.ACME_STEP_RETRIES = 2

    def broken_step(order, carried):
        raise KeyError("a field this step cannot read")

    monkeypatch.setitem(order_run.STEPS, OrderState.VALIDATING, broken_step)
    domain = DomainFactory(status=DomainStatus.CREATING)
    account = AcmeAccountFactory(account_url="https://acme.example.net/acct/1")
    token = uuid.uuid4()
    order = Order.objects.create(
        domain=domain,
        account=account,
        names=[domain.name],
        private_key=seal(b"key"),
        state=OrderState.VALIDATING,
        lease_token=token,
        lease_until=timezone.now() + datetime.timedelta(seconds=60),
    )
    outcomes = []
    for _ in range(3):
        token = Order.objects.get(pk=order.pk).lease_token
        outcomes.append(order_run.run_step(order.pk, str(token)))

    assert outcomes[0].startswith("retry validating: internal error in step validating (KeyError)")
    assert outcomes[1].startswith("retry validating")
    assert outcomes[2].startswith("failed: internal error in step validating (KeyError)")
    order.refresh_from_db()
    domain.refresh_from_db()
    assert order.state == OrderState.INVALID
    assert domain.status == DomainStatus.FAILING
    assert "internal error in step validating (KeyError), 2 times in a row" in domain.last_error
