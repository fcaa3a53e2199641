"""Two real CAs (tests/issuers/two_cas.py): the pre-flight picks the first issuer CAA allows, so a
CAA naming only the second CA goes to it directly (the primary sees no order) and its chain is
verified up to the second CA's own root; an account at the second CA is registered with External
Account Binding, and a wrong HMAC key is an operator's error naming the issuer and the setting."""

from __future__ import annotations

import uuid

import pytest
from cryptography import x509

from certificates.issuer_models import Issuer
from certificates.models import Certificate, Order
from domains.models import Domain, DomainStatus
from domains.services import create_domain
from tests.integration.pointing import point_at_platform
from tests.integration.polling import status_of, unique_name, wait_for
from tests.issuers.two_cas import EAB_HMAC_KEY, SECOND_CAA

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


def _orders_placed(stack) -> int:
    return (stack.state_dir / "logs" / "pebble.log").read_text().count("POST /order-plz")


def _issued_by(certificate: Certificate) -> str:
    return certificate.account.directory_url


def test_caa_allowing_only_the_second_issuer_goes_to_it_directly_and_the_primary_sees_no_order(
    two_issuers, challtestsrv, app
):
    cas = two_issuers()
    parent = f"caa-{uuid.uuid4().hex[:8]}.example.com"
    name = f"www.{parent}"
    point_at_platform(challtestsrv, app, name)
    challtestsrv.add_caa(parent, [{"tag": "issue", "value": SECOND_CAA}])
    primary_orders = _orders_placed(cas.primary)

    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use from the second CA")

    certificate = Certificate.objects.select_related("account").get(domain=domain)
    assert _issued_by(certificate) == cas.second.directory_url
    # Its chain leads to the second CA's own root, not the primary's.
    root = x509.load_pem_x509_certificate(cas.second.root_pem())
    chain = x509.load_pem_x509_certificates(certificate.fullchain_pem.encode())
    assert chain[-1].issuer == root.subject
    assert _orders_placed(cas.primary) == primary_orders
    assert not Order.objects.filter(domain=domain, account__directory_url=cas.primary.directory_url).exists()
    # Registered with the CA's key id: Pebble requires the binding of every account.
    second = Issuer.objects.get(name="second")
    assert second.eab_key_id and second.last_error == ""
    assert second.eab_hmac_key.reveal().decode() == EAB_HMAC_KEY


def test_without_caa_the_primary_issues(two_issuers, challtestsrv, app):
    cas = two_issuers()
    name = unique_name()
    point_at_platform(challtestsrv, app, name)

    domain = create_domain(app, name)
    wait_for(lambda: status_of(domain) == DomainStatus.IN_USE, what="in_use from the primary")

    certificate = Certificate.objects.select_related("account").get(domain=domain)
    assert _issued_by(certificate) == cas.primary.directory_url


def test_caa_allowing_no_issuer_names_every_issuer(two_issuers, challtestsrv, app):
    two_issuers()
    parent = f"caa-{uuid.uuid4().hex[:8]}.example.com"
    name = f"www.{parent}"
    point_at_platform(challtestsrv, app, name)
    challtestsrv.add_caa(parent, [{"tag": "issue", "value": "otherca.example"}])

    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")

    domain.refresh_from_db()
    assert domain.status == DomainStatus.ACTION_REQUIRED
    assert "allow none of the platform's certificate authorities" in domain.last_error
    assert "primary (letsencrypt.org)" in domain.last_error and f"second ({SECOND_CAA})" in domain.last_error
    assert f'Add {parent}. CAA 0 issue "letsencrypt.org"' in domain.last_error
    assert not Order.objects.filter(domain=domain).exists()


def test_a_wrong_eab_hmac_key_is_an_operator_error_naming_the_issuer_and_the_setting(
    two_issuers, challtestsrv, app
):
    wrong = EAB_HMAC_KEY[::-1]
    two_issuers(hmac_key=wrong)
    parent = f"caa-{uuid.uuid4().hex[:8]}.example.com"
    name = f"www.{parent}"
    point_at_platform(challtestsrv, app, name)
    challtestsrv.add_caa(parent, [{"tag": "issue", "value": SECOND_CAA}])

    domain = create_domain(app, name)
    wait_for(lambda: Domain.objects.get(pk=domain.pk).last_checked_at, what="the first check")

    domain.refresh_from_db()
    # Not the customer's to fix: retried soon, no failure counted.
    assert domain.status == DomainStatus.PENDING_DNS
    assert domain.consecutive_failures == 0
    assert "Issuer second" in domain.last_error
    assert "eab_kid and eab_hmac_key of issuer second in ACME_ISSUERS" in domain.last_error
    assert wrong not in domain.last_error
    issuer = Issuer.objects.get(name="second")
    assert "eab_hmac_key" in issuer.last_error and issuer.last_error_at is not None
