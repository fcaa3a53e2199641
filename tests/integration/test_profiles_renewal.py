"""Profiles and `replaces` end to end, through the test ACME proxy in front of Pebble (which maps
each profile to its lifetime and checks `replaces` as Let's Encrypt does): a `shortlived` domain
gets 160-hour certificates, renews at half their lifetime and keeps its profile across renewals; a
`tlsserver` domain renews at day 30 of 45; each renewal names the certificate it replaces and
spends no quota token; alreadyReplaced falls back to an order without `replaces` that spends the
ordinary renewal's token; a profile the CA stopped offering fails the order in plain words. Time
moves in the database, as in test_renewal.py."""

from __future__ import annotations

import datetime
import uuid

import pytest
from django.utils import timezone

from certificates.models import Certificate, CertificateSource, Order, OrderState
from certificates.serving import served_certificate
from domains import quota_policy
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, wait_for
from workers import renewals

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

HOUR = datetime.timedelta(hours=1)
DAY = datetime.timedelta(days=1)
MINUTE = datetime.timedelta(minutes=1)


def _name() -> str:
    # Its own registered domain, so that its quota is its own.
    return f"www.profile-{uuid.uuid4().hex[:10]}.com"


def _describe(domain: Domain) -> str:
    orders = list(Order.objects.filter(domain=domain).values_list("state", "profile", "replaces", "problem"))
    row = Domain.objects.filter(pk=domain.pk).values("status", "last_error").first()
    return f"orders {orders}; domain {row}"


def _issued(proxied_issuance, app, profile: str) -> tuple[Domain, Certificate]:
    name = _name()
    point_at_platform(proxied_issuance.pebble.challtestsrv, app, name)
    domain = create_domain(app, name, profile=profile)
    wait_for(
        lambda: status_of(domain) == DomainStatus.IN_USE,
        what=f"{name} in use",
        describe=lambda: _describe(domain),
    )
    return domain, Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)


def _at(cert: Certificate, age: datetime.timedelta) -> Certificate:
    """Moves the certificate's dates back so that it is `age` old now, with the ARI window the
    sweep would have stored, around its renewal time (Let's Encrypt exempts a renewal that
    `replaces` only once that window has opened)."""
    shift = timezone.now() - cert.not_before - age
    renew_at = cert.renew_at + shift
    Certificate.objects.filter(pk=cert.pk).update(
        not_before=cert.not_before + shift,
        not_after=cert.not_after + shift,
        renew_at=renew_at,
        ari_window_start=renew_at - HOUR,
        ari_window_end=renew_at + HOUR,
    )
    cert.refresh_from_db()
    return cert


def _successor(domain: Domain, old: Certificate) -> Certificate:
    return wait_for(
        lambda: (
            Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
            .exclude(pk=old.pk)
            .filter(created__gt=old.created)
            .first()
        ),
        what="the renewed certificate",
        describe=lambda: _describe(domain),
    )


def _tokens(name: str, account_id: int) -> list[int | None]:
    """Tokens left in every bucket a new certificate for `name` spends from (registered domain,
    exact set, account): what a renewal must leave alone when it names what it replaces."""
    buckets = quota_policy.buckets_for([name], account_id, renewal=False, overrides={})
    return [level.tokens_left for level in quota_policy.get_quota().peek_many(buckets)]


def _renews_with_replaces(proxied_issuance, domain: Domain, old: Certificate, profile: str) -> Certificate:
    """Sweeps, waits for the successor of `old`, and checks the order: profile kept, `replaces`
    naming `old` (at the CA too), no quota token spent."""
    proxy = proxied_issuance.proxy
    orders_before = len(proxy.orders)
    tokens_before = _tokens(domain.name, old.account_id)

    assert renewals.sweep_renewals() == 1
    new = _successor(domain, old)

    order = Order.objects.get(renews=old)
    assert (order.state, order.profile, order.replaces) == (OrderState.VALID, profile, old.ari_cert_id)
    assert order.quota_reservation is None
    at_ca = proxy.orders[orders_before:]
    assert [(o["identifiers"], o["replaces"], o["profile"]) for o in at_ca] == [
        ([domain.name], old.ari_cert_id, profile)
    ]
    # The refill of the account's bucket (one token a minute or so) could hide a spent token, so
    # the buckets of days (registered domain, exact set) are the ones that must be untouched.
    assert _tokens(domain.name, old.account_id)[:2] == tokens_before[:2]
    assert new.profile == profile
    assert served_certificate(domain.name).fingerprint_sha256 == new.fingerprint_sha256
    return new


def test_a_shortlived_domain_renews_at_half_its_160_hours_and_keeps_its_profile_twice(proxied_issuance, app):
    domain, cert = _issued(proxied_issuance, app, "shortlived")
    assert proxied_issuance.proxy.orders[-1]["profile"] == "shortlived"

    for _ in range(2):
        lifetime = cert.not_after - cert.not_before
        assert abs(lifetime - 160 * HOUR) < MINUTE
        assert cert.profile == "shortlived"
        assert cert.renew_at == cert.not_before + 80 * HOUR
        # Hour 79: not due; hour 81: due, and renewed under the same profile, replacing it.
        _at(cert, 79 * HOUR)
        assert cert.pk not in renewals.claim_due_renewals(limit=1000)[0]
        Certificate.objects.filter(pk=cert.pk).update(renewal_claim=None, renew_at=cert.renew_at)
        _at(cert, 81 * HOUR)
        cert = _renews_with_replaces(proxied_issuance, domain, cert, "shortlived")
    domain.refresh_from_db()
    assert (domain.status, domain.acme_profile) == (DomainStatus.IN_USE, "shortlived")


def test_a_tlsserver_domain_gets_45_days_and_renews_at_day_30(proxied_issuance, app):
    domain, cert = _issued(proxied_issuance, app, "tlsserver")
    assert abs(cert.not_after - cert.not_before - 45 * DAY) < MINUTE
    assert abs(cert.renew_at - cert.not_before - 30 * DAY) < MINUTE

    _at(cert, 29 * DAY)
    assert cert.pk not in renewals.claim_due_renewals(limit=1000)[0]
    Certificate.objects.filter(pk=cert.pk).update(renewal_claim=None, renew_at=cert.renew_at)
    _at(cert, 31 * DAY)
    new = _renews_with_replaces(proxied_issuance, domain, cert, "tlsserver")
    assert abs(new.not_after - new.not_before - 45 * DAY) < MINUTE


def test_already_replaced_orders_again_without_replaces_and_spends_the_renewals_token(proxied_issuance, app):
    domain, first = _issued(proxied_issuance, app, "")
    _at(first, 61 * DAY)
    second = _renews_with_replaces(proxied_issuance, domain, first, "")
    # The platform loses the second certificate (a restore from backup): the first is served and
    # renewed again, but the CA already has its replacement.
    Certificate.objects.filter(pk=second.pk).delete()
    Certificate.objects.filter(pk=first.pk).update(renew_at=timezone.now())
    orders_before = len(proxied_issuance.proxy.orders)
    exact_set_before = _tokens(domain.name, first.account_id)[1]

    assert renewals.sweep_renewals() == 1
    third = _successor(domain, second)

    order = Order.objects.filter(renews=first).latest("created")
    assert (order.state, order.replaces) == (OrderState.VALID, "")
    assert order.quota_reservation is not None
    # The refused order never reached Pebble; the one placed again names nothing.
    assert [o["replaces"] for o in proxied_issuance.proxy.orders[orders_before:]] == [""]
    assert _tokens(domain.name, first.account_id)[1] == exact_set_before - 1
    assert served_certificate(domain.name).fingerprint_sha256 == third.fingerprint_sha256


def test_a_profile_the_ca_stopped_offering_fails_the_order_saying_so(proxied_issuance, app):
    name = _name()
    point_at_platform(proxied_issuance.pebble.challtestsrv, app, name)
    domain = create_domain(app, name, profile="shortlived")
    # Withdrawn between the customer's choice and the order.
    proxied_issuance.proxy.profiles = {"classic": 90 * DAY}

    wait_for(
        lambda: status_of(domain) == DomainStatus.FAILING,
        what=f"{name} failing",
        describe=lambda: _describe(domain),
    )
    domain.refresh_from_db()
    assert "the CA does not offer the profile 'shortlived' chosen for this domain" in domain.last_error
    assert "the CA offers classic" in domain.last_error
    assert proxied_issuance.proxy.new_orders_for(name) == 0
