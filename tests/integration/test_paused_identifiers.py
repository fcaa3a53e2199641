"""A name the CA paused, through the test ACME proxy in front of Pebble (Let's Encrypt's pause
refusal, which Pebble lacks) and a real worker: the domain waits for an operator with the unpause
URL, nothing is sent for the name across sweeps, and once unpaused it is issued (or renewed)."""

from __future__ import annotations

import time
import uuid

import pytest
from django.utils import timezone

from certificates.models import Certificate, CertificateSource, Order, OrderState
from certificates.serving import served_certificate_of
from domains.models import Domain, DomainStatus
from domains.pauses import DomainPaused, paused_message, unpause_domains
from domains.services import create_domain, retry_now
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, wait_for
from workers import domain_checks, renewals

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

URL = "https://portal.letsencrypt.test/sfe/v1/unpause?jwt=eyJhbGciOiJFUzI1NiJ9.test.sig"


def _name() -> str:
    return f"www.paused-{uuid.uuid4().hex[:10]}.com"


def _describe(domain: Domain) -> str:
    row = Domain.objects.filter(pk=domain.pk).values("status", "next_attempt_at", "last_error").first()
    return f"{row}; orders {list(Order.objects.filter(domain=domain).values_list('state', 'problem'))}"


def _sweep_everything_for_a_while(domain: Domain) -> None:
    """Beat's sweeps, several times, with the domain made due as if its backoff had run out: a
    paused domain must come out of each with nothing sent."""
    for _ in range(3):
        Domain.objects.filter(pk=domain.pk).update(next_attempt_at=timezone.now())
        domain_checks.sweep()
        renewals.sweep_renewals()
        time.sleep(1)
    wait_for(
        lambda: Domain.objects.filter(pk=domain.pk, claim_token=None, next_attempt_at=None).exists(),
        what="the last check to settle",
        describe=lambda: _describe(domain),
    )


def test_a_paused_name_waits_for_the_operator_sends_nothing_and_is_issued_once_unpaused(
    proxied_issuance, app
):
    proxy = proxied_issuance.proxy
    name = _name()
    point_at_platform(proxied_issuance.pebble.challtestsrv, app, name)
    proxy.pause(name, URL)

    domain = create_domain(app, name)
    wait_for(
        lambda: status_of(domain) == DomainStatus.ACTION_REQUIRED,
        what="action_required",
        describe=lambda: _describe(domain),
    )
    domain.refresh_from_db()
    assert (domain.ca_unpause_url, domain.next_attempt_at) == (URL, None)
    assert domain.ca_paused_at is not None
    assert domain.last_error == paused_message(name)
    assert proxy.new_orders_for(name) == 1
    assert Order.objects.get(domain=domain).state == OrderState.INVALID

    _sweep_everything_for_a_while(domain)
    with pytest.raises(DomainPaused):
        retry_now(Domain.objects.get(pk=domain.pk))
    assert proxy.new_orders_for(name) == 1
    assert status_of(domain) == DomainStatus.ACTION_REQUIRED
    assert Domain.objects.get(pk=domain.pk).waiting_on == "paused"

    # The operator visits the URL (the proxy lifts the pause), then marks the domain unpaused.
    proxy.unpause(name)
    assert unpause_domains([domain.pk]) == [name]
    wait_for(
        lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use", describe=lambda: _describe(domain)
    )
    assert proxy.new_orders_for(name) == 2
    domain.refresh_from_db()
    assert (domain.ca_unpause_url, domain.ca_paused_at, domain.last_error) == ("", None, "")


def test_a_renewal_refused_as_paused_keeps_its_certificate_served_and_renews_once_unpaused(
    proxied_issuance, app
):
    proxy = proxied_issuance.proxy
    name = _name()
    point_at_platform(proxied_issuance.pebble.challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(
        lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use", describe=lambda: _describe(domain)
    )
    old = Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)
    assert proxy.new_orders_for(name) == 1

    proxy.pause(name, URL)
    Certificate.objects.filter(pk=old.pk).update(renew_at=timezone.now())
    assert renewals.sweep_renewals() == 1
    wait_for(
        lambda: status_of(domain) == DomainStatus.ACTION_REQUIRED,
        what="action_required",
        describe=lambda: _describe(domain),
    )
    old.refresh_from_db()
    assert old.renew_at is None
    assert served_certificate_of(domain.pk).fingerprint_sha256 == old.fingerprint_sha256
    assert Domain.objects.get(pk=domain.pk).ca_unpause_url == URL
    assert proxy.new_orders_for(name) == 2

    _sweep_everything_for_a_while(domain)
    assert proxy.new_orders_for(name) == 2
    assert Certificate.objects.get(pk=old.pk).renew_at is None

    proxy.unpause(name)
    assert unpause_domains([domain.pk]) == [name]
    new = wait_for(
        lambda: (
            Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
            .exclude(pk=old.pk)
            .first()
        ),
        what="the renewed certificate",
        describe=lambda: _describe(domain),
    )
    wait_for(lambda: served_certificate_of(domain.pk).pk == new.pk, what="the new certificate served")
    assert status_of(domain) == DomainStatus.IN_USE
    assert proxy.new_orders_for(name) == 3
