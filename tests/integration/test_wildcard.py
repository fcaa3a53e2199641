"""Wildcard domains over DNS-01, against Pebble validating for real through challtestsrv: the
customer's one-time CNAME delegation, the TXT record Certwright publishes at its target for each
order (and removes after), issuance, serving one label below, and renewal."""

from __future__ import annotations

import datetime
import uuid

import dns.message
import dns.query
import dns.rdatatype
import pytest
from django.utils import timezone

from certificates import dns01
from certificates.models import Certificate, CertificateSource, Challenge, ChallengeKind, Order, OrderState
from certificates.serving import served_certificate
from domains.models import Domain, DomainStatus
from domains.services import create_domain, retry_now
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, wait_for
from workers import renewals

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _wildcard() -> tuple[str, str]:
    base = f"wild-{uuid.uuid4().hex[:10]}.com"
    return f"*.{base}", base


def _txt_at(issuance_stack, owner: str) -> list[str]:
    """What challtestsrv (the DNS Pebble asks) answers for TXT at `owner`."""
    query = dns.message.make_query(owner + ".", dns.rdatatype.TXT)
    response = dns.query.udp(query, "127.0.0.1", port=issuance_stack.dns_port, timeout=5)
    return [
        b"".join(r.strings).decode()
        for rrset in response.answer
        for r in rrset
        if r.rdtype == dns.rdatatype.TXT
    ]


def _delegate(challtestsrv, name: str) -> None:
    """What the customer does once: _acme-challenge.<base> CNAME <label>.<DNS01_ZONE>."""
    challtestsrv.set_cname(dns01.challenge_owner(name), dns01.delegation_target(name) + ".")


def test_a_wildcard_asks_for_its_delegation_then_is_issued_over_dns01_and_served_one_label_below(
    issuance_stack, challtestsrv, app
):
    name, base = _wildcard()
    point_at_platform(challtestsrv, app, name)
    domain = create_domain(app, name)
    wait_for(
        lambda: status_of(domain) == DomainStatus.ACTION_REQUIRED,
        what="the delegation to be asked for",
        describe=lambda: Domain.objects.filter(pk=domain.pk).values("status", "last_error").first(),
    )
    domain.refresh_from_db()
    assert dns01.delegation_record(name) in domain.last_error
    assert "it has no CNAME record" in domain.last_error
    assert not Order.objects.filter(domain=domain).exists()

    _delegate(challtestsrv, name)
    retry_now(domain)
    wait_for(
        lambda: status_of(domain) == DomainStatus.IN_USE,
        what=f"{name} in use",
        describe=lambda: Domain.objects.filter(pk=domain.pk).values("status", "last_error").first(),
    )
    cert = Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)
    assert cert.sans == [name]
    challenge = Challenge.objects.get(order__domain=domain)
    assert (challenge.kind, challenge.identifier) == (ChallengeKind.DNS_01, name)
    assert Order.objects.get(domain=domain).state == OrderState.VALID
    # Served for names one label below; not for the base name, nor two labels below.
    assert served_certificate(f"shop.{base}").pk == cert.pk
    assert served_certificate(base) is None
    assert served_certificate(f"a.shop.{base}") is None
    # The order's record is gone from the platform's zone once the order is over.
    assert _txt_at(issuance_stack, dns01.delegation_target(name)) == []


def test_a_delegation_to_somewhere_else_is_named_and_nothing_is_ordered(issuance_stack, challtestsrv, app):
    name, base = _wildcard()
    point_at_platform(challtestsrv, app, name)
    challtestsrv.set_cname(dns01.challenge_owner(name), f"elsewhere.{base}.")
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.ACTION_REQUIRED, what="action required")
    domain.refresh_from_db()
    assert f"it is a CNAME to elsewhere.{base}" in domain.last_error
    assert dns01.delegation_record(name) in domain.last_error
    assert not Order.objects.filter(domain=domain).exists()


def test_a_wildcard_is_renewed_over_dns01_at_two_thirds_of_its_lifetime(issuance_stack, challtestsrv, app):
    name, _ = _wildcard()
    point_at_platform(challtestsrv, app, name)
    _delegate(challtestsrv, name)
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what=f"{name} in use")
    old = Certificate.objects.get(domain=domain, source=CertificateSource.LETSENCRYPT)
    shift = timezone.now() - old.not_before - datetime.timedelta(days=61)
    Certificate.objects.filter(pk=old.pk).update(
        not_before=old.not_before + shift, not_after=old.not_after + shift, renew_at=old.renew_at + shift
    )
    assert renewals.sweep_renewals() == 1
    new = wait_for(
        lambda: (
            Certificate.objects.filter(domain=domain, source=CertificateSource.LETSENCRYPT)
            .exclude(pk=old.pk)
            .first()
        ),
        what="the renewal",
    )
    assert new.sans == [name] and new.fingerprint_sha256 != old.fingerprint_sha256
    assert Order.objects.get(renews=old).state == OrderState.VALID
    assert status_of(domain) == DomainStatus.IN_USE


def test_a_caa_record_allowing_only_http01_stops_a_wildcard_before_the_ca(issuance_stack, challtestsrv, app):
    name, base = _wildcard()
    point_at_platform(challtestsrv, app, name)
    _delegate(challtestsrv, name)
    challtestsrv.add_caa(base, [{"tag": "issuewild", "value": "letsencrypt.org; validationmethods=http-01"}])
    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.ACTION_REQUIRED, what="action required")
    domain.refresh_from_db()
    assert "does not allow the dns-01 validation method" in domain.last_error
    assert not Order.objects.filter(domain=domain).exists()
