"""Renewal at two thirds of the lifetime and Let's Encrypt turned off, against Pebble issuing
90-day certificates and validating HTTP-01 for real. Time moves in the database: a certificate
"at day 61" is one whose dates were moved 61 days back."""

from __future__ import annotations

import datetime
import time
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.utils import timezone

from certificates.models import Certificate, CertificateSource, Order, OrderState
from certificates.serving import served_certificate
from domains import quota_policy
from domains.backoff import retry_delay
from domains.models import Domain, DomainEvent, DomainStatus, Region
from domains.services import create_domain, set_letsencrypt
from tests.factories import CertificateFactory
from tests.integration.pointing import point_at_platform, without_reusable_authorizations
from tests.integration.polling import issued, status_of, wait_for
from workers import renewals

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _name(prefix: str = "www") -> str:
    # Its own registered domain, so that its quota is its own.
    return f"{prefix}.renew-{uuid.uuid4().hex[:10]}.com"


def _at_day(cert: Certificate, day: int) -> Certificate:
    """Moves the certificate's dates back so that today is day `day` of its lifetime."""
    shift = timezone.now() - cert.not_before - datetime.timedelta(days=day)
    Certificate.objects.filter(pk=cert.pk).update(
        not_before=cert.not_before + shift,
        not_after=cert.not_after + shift,
        renew_at=cert.renew_at + shift,
    )
    cert.refresh_from_db()
    return cert


def _leaf(cert: Certificate) -> x509.Certificate:
    return x509.load_pem_x509_certificates(cert.fullchain_pem.encode())[0]


def _public_key(cert: Certificate) -> bytes:
    return (
        _leaf(cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _renewed(domain: Domain, old: Certificate) -> Certificate | None:
    return (
        Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
        .exclude(pk=old.pk)
        .first()
    )


def _describe(domain: Domain) -> str:
    orders = list(Order.objects.filter(domain=domain).values_list("state", "renews_id", "problem"))
    certs = list(
        Certificate.objects.filter(domain=domain).values_list(
            "pk", "renew_at", "renewal_failures", "renewal_error"
        )
    )
    row = Domain.objects.filter(pk=domain.pk).values().first()
    return f"orders {orders}; certificates {certs}; domain {row}"


def _point(challtestsrv, name: str, address: str) -> None:
    # add-a adds to the addresses a name has: clear them first.
    challtestsrv.clear_a(name)
    challtestsrv.add_a(name, [address])


def _tokens_left(name: str) -> int | None:
    return quota_policy.quota_of([quota_policy.registered_domains([name])[0]])[0].tokens_left


def test_a_certificate_is_due_at_two_thirds_of_its_own_lifetime(issuance_stack, challtestsrv, app):
    _, cert = issued(challtestsrv, app, _name())
    lifetime = cert.not_after - cert.not_before
    assert abs(lifetime - datetime.timedelta(days=90)) < datetime.timedelta(minutes=1)
    assert cert.renew_at == cert.not_before + lifetime * 2 / 3
    assert abs(cert.renew_at - cert.not_before - datetime.timedelta(days=60)) < datetime.timedelta(minutes=1)
    # Day 59: nothing to claim; day 61: it is claimed.
    _at_day(cert, 59)
    assert cert.pk not in renewals.claim_due_renewals()[0]
    _at_day(cert, 61)
    assert renewals.claim_due_renewals()[0] == [cert.pk]


def test_day_61_renews_with_a_new_key_and_serial_while_the_old_one_is_served_until_the_switch(
    issuance_stack, challtestsrv, app
):
    name = _name()
    domain, old = issued(challtestsrv, app, name)
    old = _at_day(old, 61)
    tokens_before = _tokens_left(name)
    events_before = domain.events.count()

    assert renewals.sweep_renewals() == 1
    seen_before_switch = set()
    statuses = set()
    deadline = time.monotonic() + 60
    while True:
        # Sample first, then look for the new certificate: a sample taken while no new
        # certificate exists yet was taken before the switch (which stores and switches at once).
        served = served_certificate(name).fingerprint_sha256
        status = status_of(domain)
        if (new := _renewed(domain, old)) is not None:
            break
        seen_before_switch.add(served)
        statuses.add(status)
        assert time.monotonic() < deadline, "no renewal within 60 s"
        time.sleep(0.02)
    assert seen_before_switch == {old.fingerprint_sha256}
    assert statuses == {DomainStatus.IN_USE}
    # Stored and switched in one transaction: the next question gets the new one.
    assert served_certificate(name).fingerprint_sha256 == new.fingerprint_sha256
    assert new.serial != old.serial
    assert _public_key(new) != _public_key(old)
    assert new.not_after > old.not_after
    order = Order.objects.get(renews=old)
    assert order.state == OrderState.VALID and order.is_renewal
    old.refresh_from_db()
    assert old.renew_at is None
    assert new.renew_at == new.not_before + (new.not_after - new.not_before) * 2 / 3
    domain.refresh_from_db()
    assert (domain.status, domain.last_error) == (DomainStatus.IN_USE, "")
    renewed = list(domain.events.order_by("pk")[events_before:])
    assert [(e.from_status, e.to_status) for e in renewed] == [(DomainStatus.IN_USE, DomainStatus.IN_USE)]
    assert renewed[0].reason.startswith("certificate renewed by ")
    # A renewal of the same names spends no token of the registered domain (only the exact set's).
    assert _tokens_left(name) == tokens_before


def test_a_renewal_the_ca_refuses_keeps_the_old_certificate_served_and_backs_off(
    issuance_stack, challtestsrv, app
):
    name = _name()
    domain, old = issued(challtestsrv, app, name)
    without_reusable_authorizations(domain)
    old = _at_day(old, 61)
    # The pre-flight accepts 127.0.0.2 (an ingress address), but nothing answers HTTP-01 there:
    # Pebble's validation fails for real.
    Region.objects.filter(pk=app.region_id).update(ingress_ipv4=["127.0.0.1", "127.0.0.2"])
    _point(challtestsrv, name, "127.0.0.2")
    try:
        assert renewals.sweep_renewals() == 1
        order = wait_for(
            lambda: Order.objects.filter(renews=old, state=OrderState.INVALID).first(),
            what="the renewal order to fail",
            describe=lambda: _describe(domain),
        )
    finally:
        _point(challtestsrv, name, "127.0.0.1")
    failed_at = order.finished
    old.refresh_from_db()
    domain.refresh_from_db()
    assert served_certificate(name).fingerprint_sha256 == old.fingerprint_sha256
    assert domain.status == DomainStatus.IN_USE
    assert not DomainEvent.objects.filter(domain=domain, to_status=DomainStatus.FAILING).exists()
    assert old.renewal_failures == 1
    assert old.renew_at == failed_at + retry_delay(1)
    assert "127.0.0.2" in order.problem
    assert domain.last_error.startswith("Renewal failed: ")
    assert domain.last_error == old.renewal_error
    assert _renewed(domain, old) is None

    # The next attempt (its backoff run out) renews, and the error is gone.
    Certificate.objects.filter(pk=old.pk).update(renew_at=timezone.now())
    assert renewals.sweep_renewals() == 1
    new = wait_for(lambda: _renewed(domain, old), what="the renewal")
    assert served_certificate(name).fingerprint_sha256 == new.fingerprint_sha256
    domain.refresh_from_db()
    assert (domain.status, domain.last_error) == (DomainStatus.IN_USE, "")


def test_a_renewal_whose_dns_no_longer_points_at_the_platform_orders_nothing_and_says_why(
    issuance_stack, challtestsrv, app
):
    name = _name()
    domain, old = issued(challtestsrv, app, name)
    old = _at_day(old, 61)
    _point(challtestsrv, name, "203.0.113.9")
    try:
        before = timezone.now()
        assert renewals.sweep_renewals() == 1
        wait_for(
            lambda: Certificate.objects.get(pk=old.pk).renewal_failures == 1, what="the renewal's pre-flight"
        )
    finally:
        _point(challtestsrv, name, "127.0.0.1")
    old.refresh_from_db()
    domain.refresh_from_db()
    assert not Order.objects.filter(renews=old).exists()
    assert served_certificate(name).fingerprint_sha256 == old.fingerprint_sha256
    assert domain.status == DomainStatus.IN_USE
    assert "203.0.113.9" in domain.last_error and domain.last_error.startswith("Renewal failed: ")
    assert before + retry_delay(1) <= old.renew_at <= timezone.now() + retry_delay(1)


def test_the_lets_encrypt_certificate_behind_a_custom_one_is_renewed_all_the_same(
    issuance_stack, challtestsrv, app
):
    name = _name()
    domain, old = issued(challtestsrv, app, name)
    custom = CertificateFactory(domain=domain, source=CertificateSource.CUSTOM, issuer="CN=Customer CA")
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.NOT_USED)
    old = _at_day(old, 61)

    assert renewals.sweep_renewals() == 1
    new = wait_for(lambda: _renewed(domain, old), what="the renewal")
    assert new.serial != old.serial
    assert status_of(domain) == DomainStatus.NOT_USED
    # The custom certificate stays served; the renewed one is the fallback.
    assert served_certificate(name).pk == custom.pk


def test_a_domain_with_lets_encrypt_disabled_never_reaches_the_ca_nor_spends_a_token(
    issuance_stack, challtestsrv, app
):
    name = _name()
    point_at_platform(challtestsrv, app, name)
    challtestsrv.clear_request_history(name)
    tokens_before = _tokens_left(name)
    domain = create_domain(app, name, letsencrypt=False)
    # Longer than a check and an order take here (the enabled domains above reach in_use in ~2 s).
    time.sleep(5)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.DISABLED
    assert not Order.objects.filter(domain=domain).exists()
    # Pebble resolves through challtestsrv: nobody (neither the platform nor the CA) asked for it.
    assert challtestsrv.dns_request_history(name) == []
    assert _tokens_left(name) == tokens_before == 50

    # Turned on later, the normal flow runs.
    set_letsencrypt(domain, True)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in use once enabled")
    assert Order.objects.filter(domain=domain, state=OrderState.VALID).count() == 1
    assert _tokens_left(name) == 49


@pytest.mark.parametrize(
    "pebble_env",
    [
        pytest.param({"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": "5"}, id="random-validation-sleeps"),
        pytest.param({"PEBBLE_WFE_NONCEREJECT": "30"}, id="30-percent-bad-nonces"),
    ],
)
def test_a_batch_of_due_certificates_is_renewed_by_one_sweep_under_pebble_variant(
    pebble_variant, web_server, celery_worker, app, pebble_env
):
    stack = pebble_variant(pebble_env)
    names = [_name(f"batch{i}") for i in range(8)]
    domains = []
    for name in names:
        point_at_platform(stack.challtestsrv, app, name)
        domains.append(create_domain(app, name))
    for domain in domains:
        wait_for(lambda d=domain: status_of(d) == DomainStatus.IN_USE, timeout=90, what=f"{domain} in use")
    olds = [_at_day(Certificate.objects.get(domain=domain), 61) for domain in domains]

    assert renewals.sweep_renewals() == len(olds)
    for domain, old in zip(domains, olds, strict=True):
        new = wait_for(lambda d=domain, o=old: _renewed(d, o), timeout=90, what=f"{domain} renewed")
        assert new.serial != old.serial and _public_key(new) != _public_key(old)
        assert served_certificate(domain.name).pk == new.pk
        assert status_of(domain) == DomainStatus.IN_USE
    # Bad nonces and slow validations are retried inside the orders: none failed.
    assert not Order.objects.filter(domain__in=domains, state=OrderState.INVALID).exists()
